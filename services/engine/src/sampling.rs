//! Token sampling: temperature, top-k, top-p, seeded per sequence.
//!
//! Reproducibility across nodes: sample `i` of a request with seed `s` draws
//! from a ChaCha8 stream keyed by (s, i) only, so any generator replica given
//! the same request produces the same text (what retries on another node rely on).

use crate::error::{EngineError, Result};
use crate::parallel::Pool;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Upper bound on `max_tokens` per request; longer asks are almost always mistakes.
pub const MAX_NEW_TOKENS: usize = 16_384;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 disables it.
    pub top_k: usize,
    pub max_tokens: usize,
    /// Generation stops at the first occurrence of any of these (not included in the text).
    pub stop: Vec<String>,
    pub seed: u64,
    /// Keep generating past EOS tokens (benchmarks that need fixed lengths).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            max_tokens: 256,
            stop: vec![],
            seed: 0,
            ignore_eos: false,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 || self.temperature > 100.0 {
            return Err(EngineError::invalid(format!(
                "temperature must be in [0, 100] (0 = greedy), got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(EngineError::invalid(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if self.max_tokens == 0 || self.max_tokens > MAX_NEW_TOKENS {
            return Err(EngineError::invalid(format!(
                "max_tokens must be in 1..={MAX_NEW_TOKENS}, got {}",
                self.max_tokens
            )));
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err(EngineError::invalid("stop strings must not be empty"));
        }
        Ok(())
    }
}

/// The RNG of sample `index` of a request seeded with `seed`.
pub fn sequence_rng(seed: u64, index: u32) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    rng
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// log P(token) under the model's unmodified distribution (temperature 1, no truncation).
    pub logprob: f32,
}

/// Draws one token from a row of logits.
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> Sampled {
    Weighed::new(logits, params.temperature).sample(logits, params, rng)
}

/// What a draw from a row of logits needs besides the RNG: the row's normaliser, and
/// for a nonzero temperature the tempered softmax numerators.
///
/// Why apart from the draw: these are two passes of `exp` over the vocabulary, the
/// costly part of sampling (3.6% of SmolLM2's 16-sample decode on 2 cores, all on the
/// loop's thread), and they depend only on the row and the temperature. So a pass
/// weighs its rows in parallel ([`weigh_rows`]) and then draws in order, each sequence
/// from its own RNG stream; the `n` samples of a new prompt share one weighing.
#[derive(Debug, Clone)]
pub struct Weighed {
    temperature: f32,
    /// log of the untempered softmax denominator.
    log_z: f32,
    /// `exp((logit - max) / temperature)`; empty when greedy.
    weights: Vec<f32>,
    /// Their sum, in order (a chain of 50k dependent adds on SmolLM2's vocabulary).
    total: f32,
}

impl Weighed {
    pub fn new(logits: &[f32], temperature: f32) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // weights[i] = exp(logit_i - max): the untempered softmax numerators.
        let mut weights: Vec<f32> = logits.iter().map(|l| l - max).collect();
        exp_in_place(&mut weights);
        let log_z = max + weights.iter().sum::<f32>().ln();
        if temperature == 0.0 {
            weights = Vec::new();
        } else if temperature != 1.0 {
            weights
                .iter_mut()
                .zip(logits)
                .for_each(|(w, l)| *w = (l - max) / temperature);
            exp_in_place(&mut weights);
        }
        let total = weights.iter().sum();
        Self {
            temperature,
            log_z,
            weights,
            total,
        }
    }

    /// Draws one token from `logits` (the row this was weighed from) with `params`;
    /// weighs afresh if `params` has another temperature (a twin with other settings).
    pub fn sample(&self, logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> Sampled {
        if params.temperature != self.temperature {
            return Weighed::new(logits, params.temperature).sample(logits, params, rng);
        }
        let token = if params.temperature == 0.0 {
            argmax(logits)
        } else {
            draw(&self.weights, self.total, params, rng)
        };
        Sampled {
            token,
            logprob: logits[token as usize] - self.log_z,
        }
    }
}

/// Each row weighed at its temperature, rows spread over `pool`'s threads.
pub fn weigh_rows(rows: &[Vec<f32>], temperatures: &[f32], pool: Pool) -> Vec<Weighed> {
    let weighed: Vec<OnceLock<Weighed>> = rows.iter().map(|_| OnceLock::new()).collect();
    pool.for_each_range(rows.len(), |range| {
        for i in range {
            let _ = weighed[i].set(Weighed::new(&rows[i], temperatures[i]));
        }
    });
    weighed
        .into_iter()
        .map(|w| w.into_inner().expect("every row was weighed"))
        .collect()
}

/// `exp` over a slice, written so the compiler vectorises it (8 lanes with AVX2);
/// libm's scalar `expf` was a visible share of batched decode (on a 50k vocabulary) and
/// of attention's softmax (a quarter of PRM scoring on the bundled verifier). Range
/// reduction to r in [-ln2/2, ln2/2] and a degree-6 polynomial: relative error below
/// 2e-7, exact 0 for very negative inputs.
///
/// The nearest integer n of x / ln2 comes from adding 1.5 x 2^23 (the sum's low mantissa
/// bits are n, rounded to nearest even by the add itself), and 2^n from those bits: plain
/// float adds and integer shifts, which vectorise. (`f32::round` and a float-to-int cast
/// compiled to scalar code here, 4x slower per element.)
pub fn exp_in_place(xs: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUNDER: f32 = 12_582_912.0;
    for x in xs.iter_mut() {
        let v = x.clamp(-87.0, 88.0);
        let t = v * LOG2E + ROUNDER;
        let n = t - ROUNDER;
        let r = v - n * LN2_HI - n * LN2_LO;
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
        let exponent = t
            .to_bits()
            .wrapping_sub(ROUNDER.to_bits())
            .wrapping_add(127)
            << 23;
        let y = p * f32::from_bits(exponent);
        *x = if *x < -87.0 { 0.0 } else { y };
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Draws from unnormalised probabilities `weights` after top-k / top-p truncation.
/// `total` is the sum of `weights`, in order.
fn draw(weights: &[f32], total: f32, params: &SamplingParams, rng: &mut ChaCha8Rng) -> u32 {
    let truncate = (params.top_k > 0 && params.top_k < weights.len()) || params.top_p < 1.0;
    if !truncate {
        let mut u = rng.random::<f32>() * total;
        for (tok, p) in weights.iter().enumerate() {
            if u < *p {
                return tok as u32;
            }
            u -= p;
        }
        return weights.iter().rposition(|p| *p > 0.0).unwrap_or(0) as u32;
    }
    let mut cands: Vec<(u32, f32)> = weights
        .iter()
        .enumerate()
        .map(|(i, &p)| (i as u32, p))
        .collect();
    let by_prob_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if params.top_k > 0 && params.top_k < cands.len() {
        cands.select_nth_unstable_by(params.top_k - 1, by_prob_desc);
        cands.truncate(params.top_k);
    }
    if params.top_p < 1.0 {
        cands.sort_unstable_by(by_prob_desc);
        let total: f32 = cands.iter().map(|c| c.1).sum();
        let mut mass = 0.0;
        let mut keep = cands.len();
        for (i, c) in cands.iter().enumerate() {
            mass += c.1 / total;
            if mass >= params.top_p {
                keep = i + 1;
                break;
            }
        }
        cands.truncate(keep);
    }
    let total: f32 = cands.iter().map(|c| c.1).sum();
    let mut u = rng.random::<f32>() * total;
    for (tok, p) in &cands {
        if u < *p {
            return *tok;
        }
        u -= p;
    }
    cands.last().map(|c| c.0).unwrap_or(0)
}

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop string appeared.
    Stop,
    /// The model emitted an end-of-sequence token.
    Eos,
    /// `max_tokens` were generated.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Eos => "eos",
            FinishReason::Length => "length",
        }
    }
}

/// The earliest occurrence of any stop string in `text` at or after byte `from`
/// (rounded down to a char boundary): (byte position, index into `stops`).
pub fn find_stop(text: &str, stops: &[String], from: usize) -> Option<(usize, usize)> {
    let mut from = from.min(text.len());
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    stops
        .iter()
        .enumerate()
        .filter_map(|(i, s)| text[from..].find(s.as_str()).map(|p| (from + p, i)))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_picks_the_argmax_and_reports_its_logprob() {
        let s = sample(&[0.0, 2.0, 1.0], &params(0.0), &mut sequence_rng(1, 0));
        assert_eq!(s.token, 1);
        let z = (1f32 + 2f32.exp() + 1f32.exp()).ln();
        assert!((s.logprob - (2.0 - z)).abs() < 1e-6);
    }

    #[test]
    fn the_same_seed_and_index_reproduce_the_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed, index| {
            let mut rng = sequence_rng(seed, index);
            (0..20)
                .map(|_| sample(&logits, &params(1.0), &mut rng).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7, 3), run(7, 3));
        assert_ne!(run(7, 3), run(7, 4));
        assert_ne!(run(7, 3), run(8, 3));
    }

    /// 20 draws of sample `index` from `logits` through `weighed`.
    fn draws(weighed: &Weighed, logits: &[f32], p: &SamplingParams, index: u32) -> Vec<Sampled> {
        let mut rng = sequence_rng(5, index);
        (0..20)
            .map(|_| weighed.sample(logits, p, &mut rng))
            .collect()
    }

    #[test]
    fn rows_weighed_in_parallel_draw_what_each_row_weighed_alone_draws() {
        let rows: Vec<Vec<f32>> = (0..9)
            .map(|r| {
                (0..3000)
                    .map(|i| ((i * (r + 3)) as f32 * 0.011).sin() * 6.0)
                    .collect()
            })
            .collect();
        let temperatures = [0.8, 1.0, 0.0, 0.3, 0.8, 1.7, 1.0, 0.8, 0.0];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for which in [Pool::Rayon, Pool::Barrier] {
            let weighed = pool.install(|| weigh_rows(&rows, &temperatures, which));
            for (i, (row, w)) in rows.iter().zip(&weighed).enumerate() {
                let alone = Weighed::new(row, temperatures[i]);
                let p = params(temperatures[i]);
                assert_eq!(
                    draws(w, row, &p, i as u32),
                    draws(&alone, row, &p, i as u32)
                );
            }
        }
    }

    #[test]
    fn a_weighing_drawn_at_another_temperature_weighs_afresh() {
        let logits: Vec<f32> = (0..200).map(|i| (i as f32 * 0.3).cos() * 4.0).collect();
        let cold = Weighed::new(&logits, 0.5);
        for t in [0.0, 0.5, 1.0, 2.0] {
            let fresh = Weighed::new(&logits, t);
            let p = params(t);
            assert_eq!(
                draws(&cold, &logits, &p, 1),
                draws(&fresh, &logits, &p, 1),
                "{t}"
            );
        }
        // And the temperature matters: a hot draw is not a cold one.
        assert_ne!(
            draws(&cold, &logits, &params(0.5), 1),
            draws(&cold, &logits, &params(2.0), 1)
        );
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_nucleus() {
        let logits = [0.0, 5.0, 4.9, -3.0];
        let mut rng = sequence_rng(0, 0);
        let k1 = SamplingParams {
            top_k: 1,
            ..params(1.0)
        };
        assert!((0..50).all(|_| sample(&logits, &k1, &mut rng).token == 1));
        let p = SamplingParams {
            top_p: 0.9,
            ..params(1.0)
        };
        let drawn: Vec<u32> = (0..200)
            .map(|_| sample(&logits, &p, &mut rng).token)
            .collect();
        assert!(drawn.iter().all(|t| *t == 1 || *t == 2));
        assert!(drawn.contains(&1) && drawn.contains(&2));
    }

    #[test]
    fn validation_names_the_bad_field() {
        let bad = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("top_p"));
        let bad = SamplingParams {
            max_tokens: 0,
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_tokens"));
    }

    #[test]
    fn vectorised_exp_matches_libm() {
        let xs: Vec<f32> = (-2000..=880).map(|i| i as f32 * 0.1).collect();
        let mut ours = xs.clone();
        exp_in_place(&mut ours);
        for (x, e) in xs.iter().zip(&ours) {
            // Below -87 (weights under 1e-38 of the top token) we return exactly 0.
            let want = if *x < -87.0 { 0.0 } else { x.exp() };
            assert!(
                (e - want).abs() <= want * 3e-7 + 1e-38,
                "exp({x}) = {e}, libm {want}"
            );
        }
    }

    #[test]
    fn find_stop_returns_the_earliest_match() {
        let stops = vec!["\n".to_string(), "ab".to_string()];
        assert_eq!(find_stop("xxab\n", &stops, 0), Some((2, 1)));
        assert_eq!(find_stop("xx\nab", &stops, 0), Some((2, 0)));
        assert_eq!(find_stop("xx\nab", &stops, 3), Some((3, 1)));
        assert_eq!(find_stop("é\n", &stops, 1), Some((2, 0)));
    }
}
