//! Rotary embedding and attention over the per-sequence KV caches, written directly
//! over slices (keys and values f32 or f16, every sum f32: [`KvElement`]).
//!
//! Why not candle ops: in a decode step each sequence brings one query row, and a tensor
//! formulation issues about a dozen small ops per sequence per layer (narrow, append,
//! reshape, matmul, scale, softmax, matmul), each allocating and dispatching. On the
//! bundled models (head_dim 32, about a hundred cached positions) that overhead costs
//! more than the arithmetic, and batching more sequences only adds more of it. Here one
//! pass over the packed batch appends keys and values and runs every (sequence, head)
//! pair as plain loops the compiler vectorizes, sequences spread over the threads of
//! the pool the model's products use ([`crate::parallel`]).
//! A sequence that brings many query rows at once (a long prefill) goes through
//! candle's GEMM instead, which splits one sequence over threads; for the small heads
//! of the bundled models only from far more rows than for wide ones
//! ([`SMALL_HEAD_DIM`]).

use crate::kv::{KvBuffer, KvCache, KvElement, KvLayer};
use crate::model::Segment;
use crate::parallel::Pool;
use crate::sampling::exp_in_place;
use candle_core::{Device, Result, Tensor};

/// From this many new tokens on, a sequence's attention runs as GEMMs, for heads wider
/// than [`SMALL_HEAD_DIM`].
const GEMM_MIN_QUERIES: usize = 24;

/// Heads up to this wide (the bundled models: 8, 16 and 32) run the direct loops up to
/// [`SMALL_HEAD_GEMM_MIN_QUERIES`] new tokens.
///
/// Why: since the direct loops keep their sums in registers they beat the GEMM
/// formulation (which copies the keys and values out, builds a mask and allocates per
/// op) on these heads at every length measured on 2 cores: bundled PRM scoring
/// (candidates of 100-300 tokens) 1.25-1.36x faster (docs/benchmarks.md). On SmolLM2's
/// 64-wide heads a 400-token prefill measured the same either way, and its logits there
/// are held to llama.cpp's (docs/engine.md), so wider heads keep the GEMM path, bit for
/// bit as before. Above 1,024 rows the GEMM's threads split one sequence, which the
/// direct loops cannot.
const SMALL_HEAD_DIM: usize = 32;
const SMALL_HEAD_GEMM_MIN_QUERIES: usize = 1024;

/// Whether a sequence bringing `rows` new tokens runs its attention as GEMMs.
fn runs_as_gemm(heads: Heads, rows: usize) -> bool {
    match heads.dim <= SMALL_HEAD_DIM {
        true => rows >= SMALL_HEAD_GEMM_MIN_QUERIES,
        false => rows >= GEMM_MIN_QUERIES,
    }
}

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
/// Sequences are spread over `pool`'s threads.
pub fn attend(
    layer: usize,
    heads: Heads,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    segments: &mut [Segment<'_>],
    pool: Pool,
) -> Result<Vec<f32>> {
    let (q_row, kv_row) = (heads.query * heads.dim, heads.kv * heads.dim);
    let total: usize = segments.iter().map(|s| s.tokens.len()).sum();
    let mut out = vec![0f32; total * q_row];
    // Each segment's queries, new keys and values, cache and output rows: a job appends
    // to its own cache and attends (the appends, transposing keys, were 1.4% of
    // SmolLM2's 16-sample decode while on the loop's thread alone).
    let mut jobs = Vec::with_capacity(segments.len());
    let mut rest = out.as_mut_slice();
    let mut offset = 0;
    for seg in segments.iter_mut() {
        let t = seg.tokens.len();
        let (mine, tail) = rest.split_at_mut(t * q_row);
        let kv = offset * kv_row..(offset + t) * kv_row;
        jobs.push(Job {
            q: &q[offset * q_row..(offset + t) * q_row],
            k: &k[kv.clone()],
            v: &v[kv],
            cache: &mut *seg.cache,
            out: mine,
        });
        rest = tail;
        offset += t;
    }
    let run = |job: &mut Job<'_>| -> Result<()> {
        let len = job.cache.len() + job.q.len() / q_row;
        match job.cache.append(layer, heads.kv, heads.dim, job.k, job.v)? {
            KvLayer::F32(buf) => attend_one(heads, job.q, buf, len, job.out),
            KvLayer::F16(buf) => attend_one(heads, job.q, buf, len, job.out),
        }
    };
    pool.try_for_each_mut(&mut jobs, run)?;
    Ok(out)
}

/// One sequence's share of [`attend`].
struct Job<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    cache: &'a mut KvCache,
    out: &'a mut [f32],
}

/// One sequence's attention, on the GEMM or the direct path.
fn attend_one<E: KvElement>(
    heads: Heads,
    q: &[f32],
    buf: &KvBuffer<E>,
    len: usize,
    out: &mut [f32],
) -> Result<()> {
    if runs_as_gemm(heads, q.len() / (heads.query * heads.dim)) {
        gemm_attention(heads, q, buf, len, out)
    } else {
        direct_attention(heads, q, buf, len, out);
        Ok(())
    }
}

/// One sequence's `t` query rows over its `len` cached positions (the last `t` new):
/// query row i sees positions 0..=len - t + i.
fn direct_attention<E: KvElement>(
    heads: Heads,
    q: &[f32],
    buf: &KvBuffer<E>,
    len: usize,
    out: &mut [f32],
) {
    let dim = heads.dim;
    let q_row = heads.query * dim;
    let t = q.len() / q_row;
    let scale = 1.0 / (dim as f32).sqrt();
    debug_assert!(buf.capacity.is_multiple_of(TAIL_BLOCK) && len <= buf.capacity);
    // Room for the scores of whole tail blocks, which may reach past `len`.
    let room = (len + 1).next_multiple_of(TAIL_BLOCK);
    let (mut scores, mut next_scores) = (vec![0f32; room], vec![0f32; room]);
    for h in 0..heads.query {
        let g = h / heads.groups();
        let values = buf.values(g, len);
        let query = |i: usize| &q[i * q_row + h * dim..][..dim];
        // Rows in pairs (a prefill's), sharing each block of keys and each value; a last
        // odd row alone.
        let mut i = 0;
        while i < t {
            let visible = len - t + i + 1;
            if i + 1 < t {
                let (first, second) = (&mut scores, &mut next_scores);
                key_scores_pair(
                    [query(i), query(i + 1)],
                    scale,
                    buf,
                    g,
                    visible,
                    first,
                    second,
                );
                let (acc, next_acc) = out[i * q_row..(i + 2) * q_row].split_at_mut(q_row);
                attend_row_pair::<E>(
                    [&mut first[..visible], &mut second[..visible + 1]],
                    values,
                    [&mut acc[h * dim..][..dim], &mut next_acc[h * dim..][..dim]],
                );
                i += 2;
            } else {
                key_scores(query(i), scale, buf, g, visible, &mut scores);
                let acc = &mut out[i * q_row + h * dim..][..dim];
                attend_row::<E>(&mut scores[..visible], values, acc);
                i += 1;
            }
        }
    }
}

/// One query row's output from its scores: softmax, then the weighted sum of values.
fn attend_row<E: KvElement>(scores: &mut [f32], values: &[E], acc: &mut [f32]) {
    softmax_weights(scores);
    let sum = lane_sum(scores);
    match acc.len() {
        8 => weighted_values::<8, E>(scores, values, acc),
        16 => weighted_values::<16, E>(scores, values, acc),
        32 => weighted_values::<32, E>(scores, values, acc),
        64 => weighted_values::<64, E>(scores, values, acc),
        _ => weighted_values_any(scores, values, acc),
    }
    normalise(acc, sum);
}

/// [`attend_row`] for two consecutive rows (the second sees one position more): each
/// value is loaded, and widened from f16, once for both. Each row's output is the
/// same sums in the same order as [`attend_row`] gives it.
fn attend_row_pair<E: KvElement>(scores: [&mut [f32]; 2], values: &[E], acc: [&mut [f32]; 2]) {
    let [first, second] = scores;
    let [acc_first, acc_second] = acc;
    softmax_weights(first);
    softmax_weights(second);
    let sums = [lane_sum(first), lane_sum(second)];
    let probs = [&*first, &*second];
    match acc_first.len() {
        8 => weighted_values_pair::<8, E>(probs, values, [acc_first, acc_second]),
        16 => weighted_values_pair::<16, E>(probs, values, [acc_first, acc_second]),
        32 => weighted_values_pair::<32, E>(probs, values, [acc_first, acc_second]),
        // Wider heads: two rows' sums no longer fit the registers.
        64 => {
            weighted_values::<64, E>(first, values, acc_first);
            weighted_values::<64, E>(second, values, acc_second);
        }
        _ => {
            weighted_values_any(first, values, acc_first);
            weighted_values_any(second, values, acc_second);
        }
    }
    normalise(acc_first, sums[0]);
    normalise(acc_second, sums[1]);
}

fn normalise(acc: &mut [f32], sum: f32) {
    let inv = 1.0 / sum;
    for a in acc.iter_mut() {
        *a *= inv;
    }
}

/// `scores[p] = exp(scores[p] - max)`, vectorised ([`exp_in_place`]: libm's scalar
/// `expf`, a call per score, was a quarter of PRM scoring on the bundled verifier).
fn softmax_weights(scores: &mut [f32]) {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    for s in scores.iter_mut() {
        *s -= max;
    }
    exp_in_place(scores);
}

/// The sum of `xs` in 8 interleaved partial sums, then those in order: a vector add per
/// 8 values, where one running sum waited on each add in turn (an eighth of the scoring
/// time once `exp` was vectorised).
fn lane_sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l += x;
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Positions whose scores [`key_scores`] keeps in registers at once.
const SCORE_BLOCK: usize = 32;

/// The block the last positions are scored in: a buffer's capacity is a multiple of
/// it, so a row's last block reads keys past what the row sees (later positions of the
/// prefill, or the buffer's zeroed room) and those scores are dropped. (Scoring them a
/// component at a time, loading and storing every score per component, was a sixth
/// of the attention time of PRM scoring.)
const TAIL_BLOCK: usize = crate::kv::POSITION_ALIGN;

/// `scores[p] = sum over d of key_p[d] * (query[d] * scale)` for the first `visible`
/// keys of KV head `g`, summed in order of `d` with one multiply-add each; `scores`
/// has room for `visible` rounded up to [`TAIL_BLOCK`] (what lies past `visible` is
/// not a score).
///
/// Keys are stored transposed, so a block of positions is one contiguous run per key
/// component: the block's sums stay in registers across all components and are stored
/// once. (Summing a component at a time into `scores` loaded and stored every score
/// once per component, and the stores were the bottleneck.) The order of the
/// operations, and so every bit of the result, is the same either way.
fn key_scores<E: KvElement>(
    query: &[f32],
    scale: f32,
    buf: &KvBuffer<E>,
    g: usize,
    visible: usize,
    scores: &mut [f32],
) {
    let whole = visible - visible % SCORE_BLOCK;
    let tail = whole..visible.next_multiple_of(TAIL_BLOCK);
    block_scores::<1, SCORE_BLOCK, E>([query], scale, buf, g, 0..whole, [&mut *scores]);
    block_scores::<1, TAIL_BLOCK, E>([query], scale, buf, g, tail, [scores]);
}

/// [`key_scores`] for two consecutive query rows of one head (the first sees `visible`
/// positions, the second one more): each block of keys is loaded, and widened from
/// f16, once for both. Every score is the same sum in the same order as [`key_scores`]
/// gives it.
fn key_scores_pair<E: KvElement>(
    queries: [&[f32]; 2],
    scale: f32,
    buf: &KvBuffer<E>,
    g: usize,
    visible: usize,
    first: &mut [f32],
    second: &mut [f32],
) {
    let whole = visible - visible % SCORE_BLOCK;
    let tail = whole..(visible + 1).next_multiple_of(TAIL_BLOCK);
    block_scores::<2, SCORE_BLOCK, E>(queries, scale, buf, g, 0..whole, [first, second]);
    block_scores::<2, TAIL_BLOCK, E>(queries, scale, buf, g, tail, [first, second]);
}

/// The scores of `R` query rows over `positions` (whole blocks of `B`, within the
/// buffer's capacity), a block at a time with its sums in registers.
fn block_scores<const R: usize, const B: usize, E: KvElement>(
    queries: [&[f32]; R],
    scale: f32,
    buf: &KvBuffer<E>,
    g: usize,
    positions: std::ops::Range<usize>,
    mut scores: [&mut [f32]; R],
) {
    let end = positions.end;
    for start in positions.step_by(B) {
        let mut acc = [[0f32; B]; R];
        for d in 0..queries[0].len() {
            let keys: [f32; B] = E::widen(&buf.key_row(g, d, end)[start..][..B]);
            for (acc, query) in acc.iter_mut().zip(&queries) {
                let qd = query[d] * scale;
                for (a, &k) in acc.iter_mut().zip(&keys) {
                    *a = k.mul_add(qd, *a);
                }
            }
        }
        for (scores, acc) in scores.iter_mut().zip(&acc) {
            scores[start..start + B].copy_from_slice(acc);
        }
    }
}

/// `acc = sum over p of probs[p] * value_p` (values position-major, `D` per position),
/// with the sum in registers: a head dimension known at compile time lets the
/// accumulator live in `D / 8` vector registers instead of being loaded and stored for
/// every position. Same order of operations as [`weighted_values_any`].
fn weighted_values<const D: usize, E: KvElement>(probs: &[f32], values: &[E], acc: &mut [f32]) {
    let mut sum = [0f32; D];
    for (&p, value) in probs.iter().zip(values.chunks_exact(D)) {
        let value: [f32; D] = E::widen(value);
        for (a, &x) in sum.iter_mut().zip(&value) {
            *a = x.mul_add(p, *a);
        }
    }
    acc.copy_from_slice(&sum);
}

/// [`weighted_values`] for two rows, the second weighing one position more: each value
/// is widened once for both, and each row's sum is the same sequence of multiply-adds.
fn weighted_values_pair<const D: usize, E: KvElement>(
    probs: [&[f32]; 2],
    values: &[E],
    acc: [&mut [f32]; 2],
) {
    let (mut first, mut second) = ([0f32; D], [0f32; D]);
    let shared = probs[0].len();
    for (p, value) in values.chunks_exact(D).take(shared).enumerate() {
        let value: [f32; D] = E::widen(value);
        let (p0, p1) = (probs[0][p], probs[1][p]);
        for ((a, b), &x) in first.iter_mut().zip(second.iter_mut()).zip(&value) {
            *a = x.mul_add(p0, *a);
            *b = x.mul_add(p1, *b);
        }
    }
    let last: [f32; D] = E::widen(&values[shared * D..][..D]);
    for (b, &x) in second.iter_mut().zip(&last) {
        *b = x.mul_add(probs[1][shared], *b);
    }
    let [acc_first, acc_second] = acc;
    acc_first.copy_from_slice(&first);
    acc_second.copy_from_slice(&second);
}

/// [`weighted_values`] for any head dimension.
fn weighted_values_any<E: KvElement>(probs: &[f32], values: &[E], acc: &mut [f32]) {
    acc.fill(0.0);
    for (&p, value) in probs.iter().zip(values.chunks_exact(acc.len())) {
        for (a, &x) in acc.iter_mut().zip(value) {
            *a = x.to_f32().mul_add(p, *a);
        }
    }
}

/// The same as [`direct_attention`] as batched GEMMs over query rows grouped by KV head.
fn gemm_attention<E: KvElement>(
    heads: Heads,
    q: &[f32],
    buf: &KvBuffer<E>,
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
            keys.extend(buf.key_row(h, d, len).iter().map(|k| k.to_f32()));
        }
        values.extend(buf.values(h, len).iter().map(|v| v.to_f32()));
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
    use crate::kv::KvDtype;
    use half::f16;

    fn f32_buffer(cache: &KvCache) -> &KvBuffer<f32> {
        match cache.layer(0).unwrap() {
            KvLayer::F32(b) => b,
            KvLayer::F16(_) => panic!("an f32 cache"),
        }
    }

    fn f16_buffer(cache: &KvCache) -> &KvBuffer<f16> {
        match cache.layer(0).unwrap() {
            KvLayer::F16(b) => b,
            KvLayer::F32(_) => panic!("an f16 cache"),
        }
    }

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
        let buf = f32_buffer(&cache);
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
        direct_attention(heads, &q, f32_buffer(&cache2), len, &mut c);
        let first = heads.query * heads.dim;
        assert_eq!(&a[..first], &c[..first]);
        assert_ne!(&a[2 * first..], &c[2 * first..]);
    }

    /// The plain loops the blocked ones replaced: every score summed a key component at
    /// a time into memory, then the values likewise.
    fn reference_attention<E: KvElement>(
        heads: Heads,
        q: &[f32],
        buf: &KvBuffer<E>,
        len: usize,
    ) -> Vec<f32> {
        let (dim, q_row) = (heads.dim, heads.query * heads.dim);
        let t = q.len() / q_row;
        let scale = 1.0 / (dim as f32).sqrt();
        let mut out = vec![0f32; q.len()];
        for h in 0..heads.query {
            let g = h / heads.groups();
            for i in 0..t {
                let visible = len - t + i + 1;
                let mut scores = vec![0f32; visible];
                for (d, &qd) in q[i * q_row + h * dim..][..dim].iter().enumerate() {
                    let qd = qd * scale;
                    for (s, &k) in scores.iter_mut().zip(buf.key_row(g, d, visible)) {
                        *s = k.to_f32().mul_add(qd, *s);
                    }
                }
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                for s in scores.iter_mut() {
                    *s -= max;
                    exp_in_place(std::slice::from_mut(s));
                }
                let sum = lane_sum(&scores);
                let acc = &mut out[i * q_row + h * dim..][..dim];
                for (&p, value) in scores.iter().zip(buf.values(g, visible).chunks_exact(dim)) {
                    for (a, &x) in acc.iter_mut().zip(value) {
                        *a = x.to_f32().mul_add(p, *a);
                    }
                }
                acc.iter_mut().for_each(|a| *a *= 1.0 / sum);
            }
        }
        out
    }

    /// The direct loops' output over all of `buf`, checked bit for bit against the plain loops.
    fn direct_equals_reference<E: KvElement>(
        heads: Heads,
        q: &[f32],
        buf: &KvBuffer<E>,
        len: usize,
        what: &str,
    ) -> Vec<f32> {
        let mut got = vec![0f32; q.len()];
        direct_attention(heads, q, buf, len, &mut got);
        assert_eq!(got, reference_attention(heads, q, buf, len), "{what}");
        got
    }

    /// Blocking the scores and keeping the value sums in registers changes no bit: the
    /// same multiply-adds in the same order, for the specialised head dimensions and
    /// any other, on lengths inside, at and across block boundaries, over f32 and f16
    /// caches.
    #[test]
    fn blocked_loops_give_the_plain_loops_bits() {
        let val = |i: usize| ((i * 7919) % 101) as f32 / 50.0 - 1.0;
        for dim in [8, 16, 24, 32, 64] {
            let heads = Heads {
                query: 4,
                kv: 2,
                dim,
            };
            for len in [
                1,
                5,
                SCORE_BLOCK - 1,
                SCORE_BLOCK,
                SCORE_BLOCK + 1,
                3 * SCORE_BLOCK + 7,
            ] {
                for t in [1, 2.min(len), 3.min(len)] {
                    let kv_row = heads.kv * dim;
                    let keys: Vec<f32> = (0..len * kv_row).map(val).collect();
                    let values: Vec<f32> = (0..len * kv_row).map(|i| val(i + 11)).collect();
                    let q: Vec<f32> = (0..t * heads.query * dim).map(|i| val(i + 3)).collect();
                    let mut cache = KvCache::new(1);
                    cache.append(0, heads.kv, dim, &keys, &values).unwrap();
                    let what = format!("dim {dim}, len {len}, t {t}");
                    let got = direct_equals_reference(heads, &q, f32_buffer(&cache), len, &what);
                    // An exactly sized buffer: the last block of scores reads its
                    // rounding room, not a next sequence's keys.
                    let mut exact = KvCache::new(1);
                    exact.reserve_exact(len);
                    exact.append(0, heads.kv, dim, &keys, &values).unwrap();
                    let (_, capacity, _) = exact.layer(0).unwrap().shape();
                    assert_eq!(capacity, len.next_multiple_of(TAIL_BLOCK), "{what}");
                    let exactly =
                        direct_equals_reference(heads, &q, f32_buffer(&exact), len, &what);
                    assert_eq!(got, exactly, "{what}");
                    let mut half = KvCache::with_dtype(1, KvDtype::F16);
                    half.append(0, heads.kv, dim, &keys, &values).unwrap();
                    let got_half =
                        direct_equals_reference(heads, &q, f16_buffer(&half), len, &what);
                    // Keys and values rounded to half precision move the output by
                    // about their rounding (2^-11 relative), no more.
                    for (x, y) in got.iter().zip(&got_half) {
                        assert!((x - y).abs() < 2e-3, "f16 vs f32: {x} vs {y}");
                    }
                }
            }
        }
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
