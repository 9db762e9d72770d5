//! Rotary embedding and attention over the per-sequence KV caches, written directly
//! over f32 slices.
//!
//! Why not candle ops: in a decode step each sequence brings one query row, and a tensor
//! formulation issues about a dozen small ops per sequence per layer (narrow, append,
//! reshape, matmul, scale, softmax, matmul), each allocating and dispatching. On the
//! bundled models (head_dim 32, about a hundred cached positions) that overhead costs
//! more than the arithmetic, and batching more sequences only adds more of it. Here one
//! pass over the packed batch appends keys and values and runs every (sequence, head)
//! pair as plain loops the compiler vectorizes, spread over the worker's thread pool.
//! A sequence that brings many query rows at once (a long prefill) goes through candle's
//! GEMM instead, which wins once there are enough rows to pack.

use crate::kv::{KvBuffer, KvCache};
use crate::model::Segment;
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

/// From this many new tokens on, a sequence's attention runs as GEMMs.
const GEMM_MIN_QUERIES: usize = 24;

/// Head layout of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub query: usize,
    pub kv: usize,
    pub dim: usize,
}

impl Heads {
    fn groups(&self) -> usize {
        self.query / self.kv
    }
}

/// Rotary cos/sin for every position: `positions * dim/2` values each.
pub struct Rotary {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub half: usize,
    /// Pairs are (i, i + half) (Llama/HF) or (2i, 2i + 1) (GGUF's interleaved layout).
    pub interleaved: bool,
}

impl Rotary {
    /// Rotates every head of every token row of `x` ((tokens, heads * 2 * half)) in place.
    pub fn apply(&self, x: &mut [f32], heads: usize, positions: &[u32]) {
        let dim = 2 * self.half;
        for (row, &pos) in x.chunks_exact_mut(heads * dim).zip(positions) {
            let at = pos as usize * self.half;
            let (cos, sin) = (&self.cos[at..at + self.half], &self.sin[at..at + self.half]);
            for head in row.chunks_exact_mut(dim) {
                if self.interleaved {
                    for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * cos[i] - b * sin[i];
                        pair[1] = a * sin[i] + b * cos[i];
                    }
                } else {
                    let (lo, hi) = head.split_at_mut(self.half);
                    for i in 0..self.half {
                        let (a, b) = (lo[i], hi[i]);
                        lo[i] = a * cos[i] - b * sin[i];
                        hi[i] = a * sin[i] + b * cos[i];
                    }
                }
            }
        }
    }
}

/// Appends each segment's keys and values to its cache for `layer`, then attends:
/// returns (total_tokens, query_heads * dim) in packed order. `q`, `k` and `v` are the
/// packed projections (rows of `heads * dim`), RoPE already applied to `q` and `k`.
pub fn attend(
    layer: usize,
    heads: Heads,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    segments: &mut [Segment<'_>],
) -> Result<Vec<f32>> {
    let (q_row, kv_row) = (heads.query * heads.dim, heads.kv * heads.dim);
    let mut offset = 0;
    for seg in segments.iter_mut() {
        let t = seg.tokens.len();
        let range = offset * kv_row..(offset + t) * kv_row;
        seg.cache
            .append(layer, heads.kv, heads.dim, &k[range.clone()], &v[range])?;
        offset += t;
    }
    let mut out = vec![0f32; offset * q_row];
    // Each segment's output rows, with its queries and (now read-only) cache.
    let mut jobs: Vec<(&[f32], &KvCache, &mut [f32])> = Vec::with_capacity(segments.len());
    let mut rest = out.as_mut_slice();
    let mut offset = 0;
    for seg in segments.iter() {
        let t = seg.tokens.len();
        let (mine, tail) = rest.split_at_mut(t * q_row);
        jobs.push((&q[offset * q_row..(offset + t) * q_row], &*seg.cache, mine));
        rest = tail;
        offset += t;
    }
    let run = |(q, cache, out): &mut (&[f32], &KvCache, &mut [f32])| -> Result<()> {
        let buf = cache
            .layer(layer)
            .expect("the segment appended to this layer");
        let len = cache.len() + q.len() / q_row;
        if q.len() / q_row >= GEMM_MIN_QUERIES {
            gemm_attention(heads, q, buf, len, out)
        } else {
            direct_attention(heads, q, buf, len, out);
            Ok(())
        }
    };
    let parallel = rayon::current_num_threads() > 1 && jobs.len() > 1;
    if parallel {
        jobs.par_iter_mut().try_for_each(run)?;
    } else {
        jobs.iter_mut().try_for_each(run)?;
    }
    Ok(out)
}

/// One sequence's `t` query rows over its `len` cached positions (the last `t` new):
/// query row i sees positions 0..=len - t + i.
fn direct_attention(heads: Heads, q: &[f32], buf: &KvBuffer, len: usize, out: &mut [f32]) {
    let dim = heads.dim;
    let q_row = heads.query * dim;
    let t = q.len() / q_row;
    let scale = 1.0 / (dim as f32).sqrt();
    let mut scores = vec![0f32; len];
    for h in 0..heads.query {
        let g = h / heads.groups();
        let values = buf.values(g, len);
        for i in 0..t {
            let visible = len - t + i + 1;
            let query = &q[i * q_row + h * dim..][..dim];
            let scores = &mut scores[..visible];
            scores.fill(0.0);
            // Scores across positions, one key component at a time (keys are stored
            // transposed): contiguous multiply-adds, no horizontal sums.
            for (d, &qd) in query.iter().enumerate() {
                let qd = qd * scale;
                for (s, &k) in scores.iter_mut().zip(buf.key_row(g, d, visible)) {
                    *s = k.mul_add(qd, *s);
                }
            }
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let acc = &mut out[i * q_row + h * dim..][..dim];
            acc.fill(0.0);
            for (&p, value) in scores.iter().zip(values.chunks_exact(dim)) {
                for (a, &x) in acc.iter_mut().zip(value) {
                    *a = x.mul_add(p, *a);
                }
            }
            let inv = 1.0 / sum;
            for a in acc.iter_mut() {
                *a *= inv;
            }
        }
    }
}

/// The same as [`direct_attention`] as batched GEMMs over query rows grouped by KV head.
fn gemm_attention(
    heads: Heads,
    q: &[f32],
    buf: &KvBuffer,
    len: usize,
    out: &mut [f32],
) -> Result<()> {
    let (dim, groups) = (heads.dim, heads.groups());
    let t = q.len() / (heads.query * dim);
    let cpu = Device::Cpu;
    // (t, heads, dim) -> (kv, groups * t, dim): a KV group's query heads stacked as rows.
    let q = Tensor::from_slice(q, (t, heads.query, dim), &cpu)?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((heads.kv, groups * t, dim))?;
    // Keys transposed, (kv, dim, len), as the buffer stores them; values (kv, len, dim).
    let mut keys = Vec::with_capacity(heads.kv * dim * len);
    let mut values = Vec::with_capacity(heads.kv * len * dim);
    for h in 0..heads.kv {
        for d in 0..dim {
            keys.extend_from_slice(buf.key_row(h, d, len));
        }
        values.extend_from_slice(buf.values(h, len));
    }
    let keys = Tensor::from_vec(keys, (heads.kv, dim, len), &cpu)?;
    let values = Tensor::from_vec(values, (heads.kv, len, dim), &cpu)?;
    let scale = 1.0 / (dim as f64).sqrt();
    let scores = (q.matmul(&keys)? * scale)?.broadcast_add(&causal_mask(groups, t, len)?)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let heads_out = probs
        .matmul(&values)?
        .reshape((heads.query, t, dim))?
        .transpose(0, 1)?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    out.copy_from_slice(&heads_out);
    Ok(())
}

/// Additive mask for `t` new queries (repeated for `groups` heads) over `len`
/// keys, of which the first `len - t` are the cached past: (groups * t, len).
fn causal_mask(groups: usize, t: usize, len: usize) -> Result<Tensor> {
    let past = len - t;
    let mask: Vec<f32> = (0..groups * t)
        .flat_map(|row| {
            let limit = past + row % t;
            (0..len).map(move |col| if col <= limit { 0.0 } else { f32::NEG_INFINITY })
        })
        .collect();
    Tensor::from_vec(mask, (groups * t, len), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct loops and the GEMM formulation agree on a causal block with history.
    #[test]
    fn direct_and_gemm_paths_agree() {
        let heads = Heads {
            query: 4,
            kv: 2,
            dim: 8,
        };
        let (past, t) = (5, 3);
        let len = past + t;
        let val = |i: usize| ((i * 7919) % 97) as f32 / 97.0 - 0.5;
        let mut cache = KvCache::new(1);
        let kv_row = heads.kv * heads.dim;
        let keys: Vec<f32> = (0..len * kv_row).map(val).collect();
        let values: Vec<f32> = (0..len * kv_row).map(|i| val(i + 13)).collect();
        cache
            .append(0, heads.kv, heads.dim, &keys, &values)
            .unwrap();
        let q: Vec<f32> = (0..t * heads.query * heads.dim)
            .map(|i| val(i + 31))
            .collect();
        let buf = cache.layer(0).unwrap();
        let mut a = vec![0f32; q.len()];
        let mut b = vec![0f32; q.len()];
        direct_attention(heads, &q, buf, len, &mut a);
        gemm_attention(heads, &q, buf, len, &mut b).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        // The first new query sees only the past and itself: changing the last key
        // must not move it.
        let mut cache2 = KvCache::new(1);
        let mut keys2 = keys.clone();
        keys2[(len - 1) * kv_row] += 5.0;
        cache2
            .append(0, heads.kv, heads.dim, &keys2, &values)
            .unwrap();
        let mut c = vec![0f32; q.len()];
        direct_attention(heads, &q, cache2.layer(0).unwrap(), len, &mut c);
        let first = heads.query * heads.dim;
        assert_eq!(&a[..first], &c[..first]);
        assert_ne!(&a[2 * first..], &c[2 * first..]);
    }

    #[test]
    fn rotary_halves_and_pairs_rotate_the_same_angles() {
        let rot = |interleaved| Rotary {
            cos: vec![1.0, 1.0, 0.0, 0.5],
            sin: vec![0.0, 0.0, 1.0, 0.5],
            half: 2,
            interleaved,
        };
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        rot(false).apply(&mut x, 1, &[1]);
        // pairs (x0, x2) by angle 0 (cos 0, sin 1), (x1, x3) by cos 0.5 / sin 0.5.
        assert_eq!(x, vec![-3.0, -1.0, 1.0, 3.0]);
        let mut y = vec![1.0, 3.0, 2.0, 4.0];
        rot(true).apply(&mut y, 1, &[1]);
        assert_eq!(y, vec![-3.0, 1.0, -1.0, 3.0]);
    }
}
