//! The machine's arithmetic peak, measured rather than taken from a datasheet, so that
//! every throughput figure can also be read as a fraction of what the cores can do (MFU).
//!
//! - f32: a large square matmul through candle (the same gemm our dense layers call),
//!   on all cores. This is the attainable f32 peak, not the theoretical FMA peak.
//! - int8: a dot-product loop that keeps eight independent accumulators busy with the
//!   best u8×i8 instruction the CPU has (VNNI `vpdpbusd` when present, else AVX2
//!   `vpmaddubsw` + `vpmaddwd`), on data that stays in L1, one thread per core. No crate
//!   measures this; it is a few lines of intrinsics.

use candle_core::{Device, Tensor};
use std::time::Instant;

#[cfg(target_arch = "x86_64")]
use int8::int8_ops;

#[cfg(not(target_arch = "x86_64"))]
fn int8_ops(_threads: usize) -> (f64, &'static str) {
    (f64::NAN, "not measured on this architecture")
}

/// Operations per second (a multiply-add counts two).
#[derive(Debug, Clone, Copy)]
pub struct Peak {
    pub f32_flops: f64,
    pub int8_ops: f64,
    pub int8_kernel: &'static str,
    pub threads: usize,
}

pub fn measure() -> anyhow::Result<Peak> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (int8_ops, int8_kernel) = int8_ops(threads);
    Ok(Peak {
        f32_flops: f32_flops()?,
        int8_ops,
        int8_kernel,
        threads,
    })
}

fn f32_flops() -> anyhow::Result<f64> {
    let n = 1024;
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    a.matmul(&b)?; // warm-up: packing buffers, thread pool
    let mut best = 0f64;
    for _ in 0..10 {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        std::hint::black_box(&c);
        best = best.max(2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
}

#[cfg(target_arch = "x86_64")]
mod int8 {
    /// Best of seven (a shared host is noisy), all threads at once; each thread runs
    /// the loop on its own buffers.
    pub fn int8_ops(threads: usize) -> (f64, &'static str) {
        const ROUNDS: usize = 200_000;
        let kernel = kernel_name();
        let mut best = 0f64;
        for _ in 0..7 {
            let t = Instant::now();
            let ops: u64 = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| s.spawn(|| int8_loop(ROUNDS)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
            });
            best = best.max(ops as f64 / t.elapsed().as_secs_f64());
        }
        (best, kernel)
    }

    fn kernel_name() -> &'static str {
        if vnni() {
            "VNNI vpdpbusd (256-bit)"
        } else {
            "AVX2 vpmaddubsw+vpmaddwd"
        }
    }

    fn vnni() -> bool {
        std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }

    /// Runs `rounds` passes over 1 KiB of u8 and i8; returns the operations done.
    fn int8_loop(rounds: usize) -> u64 {
        let u = vec![3u8; 1024];
        let w = vec![-2i8; 1024];
        // SAFETY: the feature checks select a kernel the CPU supports.
        let acc = unsafe {
            if vnni() {
                loop_vnni(&u, &w, rounds)
            } else {
                loop_avx2(&u, &w, rounds)
            }
        };
        std::hint::black_box(acc);
        // 32 byte pairs per instruction per accumulator step, 2 operations each.
        (rounds * u.len() * 2) as u64
    }

    use std::arch::x86_64::*;
    use std::time::Instant;

    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    unsafe fn loop_vnni(u: &[u8], w: &[i8], rounds: usize) -> i32 {
        let mut acc = [_mm256_setzero_si256(); 8];
        for _ in 0..rounds {
            for chunk in 0..u.len() / 256 {
                for (k, a) in acc.iter_mut().enumerate() {
                    let off = chunk * 256 + k * 32;
                    let x = _mm256_loadu_si256(u.as_ptr().add(off).cast());
                    let y = _mm256_loadu_si256(w.as_ptr().add(off).cast());
                    *a = _mm256_dpbusd_epi32(*a, x, y);
                }
            }
        }
        reduce(&acc)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn loop_avx2(u: &[u8], w: &[i8], rounds: usize) -> i32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); 8];
        for _ in 0..rounds {
            for chunk in 0..u.len() / 256 {
                for (k, a) in acc.iter_mut().enumerate() {
                    let off = chunk * 256 + k * 32;
                    let x = _mm256_loadu_si256(u.as_ptr().add(off).cast());
                    let y = _mm256_loadu_si256(w.as_ptr().add(off).cast());
                    let pairs = _mm256_maddubs_epi16(x, y);
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        reduce(&acc)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn reduce(acc: &[__m256i; 8]) -> i32 {
        let mut lanes = [0i32; 8];
        for a in acc {
            let mut v = [0i32; 8];
            _mm256_storeu_si256(v.as_mut_ptr().cast(), *a);
            for (l, x) in lanes.iter_mut().zip(v) {
                *l = l.wrapping_add(x);
            }
        }
        lanes.iter().fold(0, |s, x| s.wrapping_add(*x))
    }
}
