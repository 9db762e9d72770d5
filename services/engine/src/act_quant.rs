//! Activations quantized to 8-bit blocks (ggml's Q8_1), the input of the Q4_1/Q8_0
//! kernels ([`crate::qmatmul`], [`crate::quant_groups`]).
//!
//! Why written out in AVX2: every product of a quantized model quantizes its input
//! rows first, on the calling thread while the pool's other threads wait. The plain
//! loop (a `round_ties_even` and a saturating cast per value) compiled to scalar code
//! and was 3.3% of SmolLM2's 16-sample decode on 2 cores, a sixth of the step's serial
//! part. The vector form does the same operations in the same order per value (an
//! exact `max`, one multiply, round to nearest even, integer sum), so its blocks are
//! bit for bit the plain loop's, which stays as the reference and the non-AVX2 path.

use crate::qmatmul::QK;
use half::f16;

/// One activation block: 32 values as `d * q`, with `s = d * sum(q)`; `d` and `s`
/// hold f16-rounded values widened to f32, as ggml stores them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActBlock {
    pub(crate) d: f32,
    pub(crate) s: f32,
    pub(crate) qs: [i8; QK],
}

/// Every row of `x` (rows of `k` features, `k` a multiple of [`QK`]) as blocks, in
/// order.
pub(crate) fn quantize_rows(x: &[f32], k: usize) -> Vec<ActBlock> {
    debug_assert!(k.is_multiple_of(QK) && x.len().is_multiple_of(k.max(1)));
    x.chunks_exact(QK)
        .map(|chunk| quantize_block(chunk.try_into().expect("QK values")))
        .collect()
}

/// The block's scale `d = max|x| / 127` and the quantized sum as ggml stores them.
fn finish(amax: f32, sum: i32, qs: [i8; QK]) -> ActBlock {
    let d = amax / 127.0;
    ActBlock {
        d: f16::from_f32(d).to_f32(),
        s: f16::from_f32(d * sum as f32).to_f32(),
        qs,
    }
}

/// `127 / max|x|`, or 0 for an all-zero block.
fn inverse_scale(amax: f32) -> f32 {
    if amax != 0.0 {
        127.0 / amax
    } else {
        0.0
    }
}

/// ggml's `quantize_row_q8_1` (and `_q8_0`, which drops `s`) for one block: scale by
/// 127/max|x| and round to nearest even.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "avx2"))))]
fn quantize_block_scalar(x: &[f32; QK]) -> ActBlock {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let id = inverse_scale(amax);
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        let r = (v * id).round_ties_even() as i32;
        *q = r as i8;
        sum += r;
    }
    finish(amax, sum, qs)
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
fn quantize_block(x: &[f32; QK]) -> ActBlock {
    quantize_block_scalar(x)
}

/// [`quantize_block_scalar`] in four 8-lane vectors. The values are within ±127 after
/// scaling, so the saturating packs to 8 bits keep them exactly.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
fn quantize_block(x: &[f32; QK]) -> ActBlock {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 is enabled at compile time (cfg above), and every load reads 8 of
    // the block's 32 values.
    unsafe {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let sign = _mm256_set1_ps(-0.0);
        let abs = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let id = _mm256_set1_ps(inverse_scale(amax));
        const NEAREST_EVEN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let q =
            v.map(|v| _mm256_cvtps_epi32(_mm256_round_ps::<NEAREST_EVEN>(_mm256_mul_ps(v, id))));
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)));
        // The packs interleave 128-bit halves: 32-bit lanes come out as 0 4 1 5 2 6 3 7.
        let packed = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let ordered =
            _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let mut qs = [0i8; QK];
        _mm256_storeu_si256(qs.as_mut_ptr().cast(), ordered);
        finish(amax, sum, qs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn blocks_are_the_plain_loops_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut blocks: Vec<[f32; QK]> = (0..2000)
            .map(|i| {
                let scale = [1e-3, 1.0, 40.0, 1e4][i % 4];
                std::array::from_fn(|_| (rng.random::<f32>() - 0.5) * scale)
            })
            .collect();
        // Ties after scaling (x * 127 / 127 = k + 0.5), a zero block, one value alone,
        // negative zeros, and the extremes.
        blocks.push(std::array::from_fn(|i| {
            if i == 0 {
                127.0
            } else {
                i as f32 - 15.5
            }
        }));
        blocks.push([0.0; QK]);
        blocks.push(std::array::from_fn(|i| if i == 9 { -3.0 } else { -0.0 }));
        blocks.push(std::array::from_fn(
            |i| if i % 2 == 0 { 1e30 } else { -1e30 },
        ));
        for x in &blocks {
            assert_eq!(quantize_block(x), quantize_block_scalar(x), "{x:?}");
        }
        let tie = quantize_block_scalar(&blocks[2000]);
        assert_eq!(&tie.qs[1..5], &[-14, -14, -12, -12], "ties go to even");
    }

    #[test]
    fn rows_are_their_blocks_in_order() {
        let x: Vec<f32> = (0..4 * QK).map(|i| (i as f32 * 0.37).sin()).collect();
        let rows = quantize_rows(&x, 2 * QK);
        let blocks: Vec<ActBlock> = x
            .chunks_exact(QK)
            .map(|c| quantize_block_scalar(c.try_into().unwrap()))
            .collect();
        assert_eq!(rows, blocks);
    }
}
