//! A Q4_1 x f32 matrix product with an AVX2 inner loop.
//!
//! Why our own kernel: candle 0.11 has SIMD dot products for Q4_0, Q8_0 and the
//! k-quants but computes Q4_1 (the format of the bundled SmolLM2 GGUF) with a
//! scalar loop, about half of llama.cpp's speed. Re-quantizing to a format with
//! a fast kernel would change the weights, so greedy outputs would no longer
//! match llama.cpp. This kernel keeps the file's blocks byte for byte and follows
//! ggml's numerics: activations are quantized per row to Q8_1 blocks (f16 scale,
//! f16 scaled sum) and each block pair contributes `d_w*d_a*dot(q_w,q_a) + m_w*s_a`.
//!
//! It runs as a candle `CustomOp1`, so it slots into the graph like `QMatMul`.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use half::f16;
use rayon::prelude::*;

/// Number of weights in one block (ggml's QK4_1 / QK8_1).
const QK: usize = 32;

/// One ggml `block_q4_1`: 32 weights as `d * q + m`, q in 0..16. Low nibbles
/// hold elements 0..16, high nibbles elements 16..32.
#[repr(C)]
#[derive(Clone, Copy)]
struct BlockQ41 {
    d: f16,
    m: f16,
    qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ41>() == 20);

/// One activation block quantized like ggml's `block_q8_1`, with the f16 scale
/// and scaled sum already widened to f32 (their values are f16-rounded).
#[derive(Clone, Copy)]
struct BlockQ81 {
    d: f32,
    s: f32,
    qs: [i8; QK],
}

/// A Q4_1 weight matrix of shape (rows, cols), multiplied as `x @ W^T`.
pub struct Q41Matmul {
    rows: usize,
    cols: usize,
    blocks: Vec<BlockQ41>,
}

impl Q41Matmul {
    /// Takes the raw blocks of a 2-D Q4_1 `QTensor` (rows = output features).
    pub fn from_qtensor(t: &QTensor) -> candle_core::Result<Self> {
        if t.dtype() != GgmlDType::Q4_1 {
            candle_core::bail!("Q41Matmul needs a Q4_1 tensor, got {:?}", t.dtype())
        }
        let (rows, cols) = t.shape().dims2()?;
        if cols % QK != 0 {
            candle_core::bail!("Q4_1 row length {cols} is not a multiple of {QK}")
        }
        let data = t.data()?;
        let n_blocks = rows * cols / QK;
        if data.len() != n_blocks * std::mem::size_of::<BlockQ41>() {
            candle_core::bail!(
                "Q4_1 tensor has {} bytes, expected {}",
                data.len(),
                n_blocks * 20
            )
        }
        let blocks = data
            .chunks_exact(20)
            .map(|b| BlockQ41 {
                d: f16::from_le_bytes([b[0], b[1]]),
                m: f16::from_le_bytes([b[2], b[3]]),
                qs: b[4..20].try_into().expect("16 bytes"),
            })
            .collect();
        Ok(Self { rows, cols, blocks })
    }

    pub fn out_features(&self) -> usize {
        self.rows
    }

    fn row(&self, r: usize) -> &[BlockQ41] {
        let per_row = self.cols / QK;
        &self.blocks[r * per_row..(r + 1) * per_row]
    }
}

/// ggml's `quantize_row_q8_1`: per block, scale by max|x|/127 and round to nearest.
fn quantize_row_q8_1(x: &[f32], out: &mut Vec<BlockQ81>) {
    for chunk in x.chunks_exact(QK) {
        let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut qs = [0i8; QK];
        let mut sum = 0i32;
        for (q, v) in qs.iter_mut().zip(chunk) {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        out.push(BlockQ81 {
            d: f16::from_f32(d).to_f32(),
            s: f16::from_f32(d * sum as f32).to_f32(),
            qs,
        });
    }
}

#[cfg_attr(
    all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ),
    allow(dead_code)
)]
fn dot_scalar(w: &[BlockQ41], a: &[BlockQ81]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut isum = 0i32;
        for j in 0..QK / 2 {
            isum += (x.qs[j] & 0x0F) as i32 * y.qs[j] as i32;
            isum += (x.qs[j] >> 4) as i32 * y.qs[j + QK / 2] as i32;
        }
        acc += x.d.to_f32() * y.d * isum as f32 + x.m.to_f32() * y.s;
    }
    acc
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
fn dot(w: &[BlockQ41], a: &[BlockQ81]) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY: the cfg above guarantees AVX2 and FMA at compile time; every load
    // reads exactly the 16 or 32 bytes of one block field.
    unsafe {
        let low_mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0f32;
        for (x, y) in w.iter().zip(a) {
            mins += x.m.to_f32() * y.s;
            let packed = _mm_loadu_si128(x.qs.as_ptr() as *const __m128i);
            let nibbles = _mm256_and_si256(
                _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
                low_mask,
            );
            let act = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            // u8 x i8 pairs summed to i16 (max 2*15*127, no overflow), then to i32.
            let pairs = _mm256_maddubs_epi16(nibbles, act);
            let sums = _mm256_madd_epi16(pairs, ones);
            let scale = _mm256_set1_ps(x.d.to_f32() * y.d);
            acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc);
        }
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let s4 = _mm_add_ps(hi, lo);
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
        _mm_cvtss_f32(s1) + mins
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)))]
fn dot(w: &[BlockQ41], a: &[BlockQ81]) -> f32 {
    dot_scalar(w, a)
}

/// Output rows handed to one rayon task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 64;

impl CustomOp1 for Q41Matmul {
    fn name(&self) -> &'static str {
        "q4_1-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("q4_1 matmul expects f32 activations")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("q4_1 matmul expects contiguous activations")
        };
        let x = &data[start..end];
        let dims = layout.shape().dims();
        let k = *dims.last().unwrap_or(&0);
        if k != self.cols {
            candle_core::bail!(
                "q4_1 matmul: input has {k} features, weight expects {}",
                self.cols
            )
        }
        let m = x.len() / k;
        let mut act = Vec::with_capacity(m * k / QK);
        for row in x.chunks_exact(k) {
            quantize_row_q8_1(row, &mut act);
        }
        let per_row = k / QK;
        let n = self.rows;
        // Each task owns a band of output features for every activation row;
        // the band's weights stay in cache while all rows stream past them.
        let bands: Vec<Vec<f32>> = (0..n)
            .into_par_iter()
            .step_by(ROWS_PER_TASK)
            .map(|r0| {
                let r1 = (r0 + ROWS_PER_TASK).min(n);
                let mut band = vec![0f32; m * (r1 - r0)];
                for r in r0..r1 {
                    let w = self.row(r);
                    for i in 0..m {
                        band[i * (r1 - r0) + (r - r0)] =
                            dot(w, &act[i * per_row..(i + 1) * per_row]);
                    }
                }
                band
            })
            .collect();
        let mut out = vec![0f32; m * n];
        for (b, band) in bands.iter().enumerate() {
            let r0 = b * ROWS_PER_TASK;
            let width = band.len() / m.max(1);
            for i in 0..m {
                out[i * n + r0..i * n + r0 + width]
                    .copy_from_slice(&band[i * width..(i + 1) * width]);
            }
        }
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = n;
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module, Tensor};

    #[test]
    fn simd_dot_matches_the_scalar_reference() {
        let mut rng = 7u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((rng >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let w: Vec<f32> = (0..8 * 96).map(|_| next()).collect();
        let wt = Tensor::from_vec(w.clone(), (8, 96), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q4_1).unwrap();
        let op = Q41Matmul::from_qtensor(&q).unwrap();
        let x: Vec<f32> = (0..96).map(|_| next()).collect();
        let mut act = vec![];
        quantize_row_q8_1(&x, &mut act);
        for r in 0..8 {
            let a = dot(op.row(r), &act);
            let b = dot_scalar(op.row(r), &act);
            assert!((a - b).abs() < 1e-4, "row {r}: {a} vs {b}");
        }
    }

    #[test]
    fn matmul_is_as_accurate_as_candles_qmatmul() {
        // Both quantize activations to 8 bits, so neither equals the f32 product;
        // ours must be no worse than candle's (they differ only in rounding details).
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (200, 128), &dev).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let exact_w = q.dequantize(&dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 128), &dev).unwrap();
        let exact = x.matmul(&exact_w.t().unwrap()).unwrap();
        let ours = x
            .apply_op1_no_bwd(&Q41Matmul::from_qtensor(&q).unwrap())
            .unwrap();
        let theirs = candle_core::quantized::QMatMul::from_qtensor(q)
            .unwrap()
            .forward(&x)
            .unwrap();
        let err = |t: &Tensor| -> f32 {
            (t - &exact)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .sqrt()
        };
        let (ours, theirs) = (err(&ours), err(&theirs));
        assert!(
            ours < 0.1 && ours < theirs * 1.2,
            "rms error ours {ours} vs candle {theirs}"
        );
    }
}
