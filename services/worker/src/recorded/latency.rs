//! The latency model of a recorded node: what a call costs on the real engine, fitted
//! to calls measured on it (`ponder fit-latency`), stored as `latency.json` beside the
//! recording.
//!
//! The model follows the engine's batch loop (docs/engine.md): a generate call pays a
//! fixed cost and its uncached prompt tokens once (prefill), then each decode step
//! costs a fixed part, a part per sequence in the batch, and a part per token of
//! context each sequence attends to (attention reads the whole KV cache, so a long
//! sample's late tokens cost more than its first); a call's samples leave the batch as
//! they finish. Run alone, a call of uncached prompt `u` (of `P` prompt tokens),
//! longest sample `L` tokens, `T` sampled tokens in all and attended context
//! `C = sum over samples of (P x t + t^2 / 2)` (a sample of `t` tokens) takes
//!
//! `call + prefill_token x u + step x L + step_sequence x T + attention x C`
//!
//! (the sum over steps of `step + step_sequence x batch + attention x context`). A
//! score call takes
//! `call + token x tokens + candidate x candidates + attention x C`, with
//! `C = sum over candidates of t^2 / 2` (a candidate of `t` tokens, each attending to
//! those before it): without that term, a partial solution of 40 tokens and a whole one
//! of 390 cost the same per token, and the strategies' own calls ran a third slower
//! than modelled (docs/scaling.md, "N = 1, call by call"). Both are linear in their
//! coefficients, so the fit is a least-squares problem on relative error (calls range
//! from a millisecond to a second) with non-negative coefficients.

use serde::{Deserialize, Serialize};

/// Seconds per unit of each part of a generate call.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateCost {
    pub call_s: f64,
    pub prefill_token_s: f64,
    pub step_s: f64,
    pub step_sequence_s: f64,
    /// Per token of context one sequence attends to in one step.
    pub attention_token_s: f64,
}

/// Seconds per unit of each part of a score call.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreCost {
    pub call_s: f64,
    pub token_s: f64,
    pub candidate_s: f64,
    /// Per token of context one candidate's token attends to (absent in fits made
    /// before it was modelled: 0).
    #[serde(default)]
    pub attention_token_s: f64,
}

impl GenerateCost {
    /// A call's prefill: its fixed cost and its uncached prompt tokens.
    pub fn prefill(&self, uncached_prompt_tokens: u32) -> f64 {
        self.call_s + self.prefill_token_s * f64::from(uncached_prompt_tokens)
    }

    /// `(a, b)` such that `k` decode steps of `batch` sequences whose contexts add up
    /// to `context` tokens take `a k + b k^2 / 2` (each step, every context grows by
    /// one).
    pub fn steps_curve(&self, batch: usize, context: f64) -> (f64, f64) {
        let a =
            self.step_s + self.step_sequence_s * batch as f64 + self.attention_token_s * context;
        (a, self.attention_token_s * batch as f64)
    }

    /// A call run alone.
    pub fn alone(&self, m: &GenerateMeasure) -> f64 {
        self.prefill(m.uncached_prompt_tokens)
            + self.step_s * f64::from(m.longest)
            + self.step_sequence_s * m.sampled_tokens as f64
            + self.attention_token_s * m.attended_context
    }
}

impl ScoreCost {
    /// A pass over `candidates` candidates of `tokens` tokens in all, attending to
    /// `attended_context` ([`score_attended_context`]).
    pub fn pass(&self, tokens: u64, candidates: u32, attended_context: f64) -> f64 {
        self.call_s
            + self.token_s * tokens as f64
            + self.candidate_s * f64::from(candidates)
            + self.attention_token_s * attended_context
    }

    pub fn alone(&self, m: &ScoreMeasure) -> f64 {
        self.pass(m.tokens, m.candidates, m.attended_context)
    }
}

/// One generate call measured alone on the real engine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateMeasure {
    pub n: u32,
    pub prompt_tokens: u32,
    pub uncached_prompt_tokens: u32,
    /// Tokens of its longest sample (the decode steps it took).
    pub longest: u32,
    pub sampled_tokens: u64,
    /// `sum over samples of (prompt_tokens x t + t^2 / 2)`: [`attended_context`].
    pub attended_context: f64,
    pub seconds: f64,
}

/// The context tokens that samples of `tokens` tokens after a prompt of
/// `prompt_tokens` attend to over their decode steps, in all.
pub fn attended_context(prompt_tokens: u32, tokens: impl IntoIterator<Item = u32>) -> f64 {
    tokens
        .into_iter()
        .map(|t| f64::from(prompt_tokens) * f64::from(t) + f64::from(t) * f64::from(t) / 2.0)
        .sum()
}

/// The context that candidates of `tokens` tokens each attend to over a score pass, in
/// all: `sum of t^2 / 2`.
pub fn score_attended_context(tokens: impl IntoIterator<Item = u64>) -> f64 {
    tokens
        .into_iter()
        .map(|t| (t as f64) * (t as f64) / 2.0)
        .sum()
}

/// One score call measured alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreMeasure {
    pub candidates: u32,
    pub tokens: u64,
    /// [`score_attended_context`] of its candidates' tokens (0 in older fits).
    #[serde(default)]
    pub attended_context: f64,
    pub seconds: f64,
}

/// Concurrent calls measured together, against the model's simulated makespan: the
/// check that the batch loop's sharing (not just one call alone) is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrentCheck {
    pub calls: u32,
    pub n: u32,
    pub measured_s: f64,
    pub modelled_s: f64,
}

/// How far the model is from what it was fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitError {
    /// Median and largest |modelled - measured| / measured over the fitted calls.
    pub median: f64,
    pub max: f64,
}

/// `latency.json`: the fitted model, the measurements it was fitted on and its error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyModel {
    pub model_id: String,
    /// Where it was measured (host name and cores) and with how many worker threads.
    pub machine: String,
    pub threads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<GenerateCost>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<ScoreCost>,
    pub error: FitError,
    #[serde(default)]
    pub generate_measures: Vec<GenerateMeasure>,
    #[serde(default)]
    pub score_measures: Vec<ScoreMeasure>,
    #[serde(default)]
    pub concurrent: Vec<ConcurrentCheck>,
}

/// The file a recording directory keeps its latency model in.
pub const LATENCY_FILE: &str = "latency.json";

impl LatencyModel {
    /// A model given by its costs, with no measurements behind it (a hand-set model:
    /// tests, or a what-if run; `ponder fit-latency` writes measured ones).
    pub fn from_costs(
        model_id: &str,
        generate: Option<GenerateCost>,
        score: Option<ScoreCost>,
    ) -> Self {
        Self {
            model_id: model_id.into(),
            machine: "set by hand, not measured".into(),
            threads: 0,
            generate,
            score,
            error: FitError {
                median: 0.0,
                max: 0.0,
            },
            generate_measures: vec![],
            score_measures: vec![],
            concurrent: vec![],
        }
    }

    /// Writes `latency.json` into the recording directory `dir`.
    pub fn save(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        let path = dir.join(LATENCY_FILE);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn load(dir: &std::path::Path) -> anyhow::Result<Self> {
        let path = dir.join(LATENCY_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (write it with `ponder fit-latency`, docs/scaling.md)",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// Fits a generate cost to calls measured alone; with its error.
pub fn fit_generate(measures: &[GenerateMeasure]) -> anyhow::Result<(GenerateCost, FitError)> {
    let rows: Vec<(Vec<f64>, f64)> = measures
        .iter()
        .map(|m| {
            let x = vec![
                1.0,
                f64::from(m.uncached_prompt_tokens),
                f64::from(m.longest),
                m.sampled_tokens as f64,
                m.attended_context,
            ];
            (x, m.seconds)
        })
        .collect();
    let c = fit_relative(&rows)?;
    let cost = GenerateCost {
        call_s: c[0],
        prefill_token_s: c[1],
        step_s: c[2],
        step_sequence_s: c[3],
        attention_token_s: c[4],
    };
    let err = fit_error(measures.iter().map(|m| (cost.alone(m), m.seconds)));
    Ok((cost, err))
}

/// Fits a score cost to calls measured alone; with its error.
pub fn fit_score(measures: &[ScoreMeasure]) -> anyhow::Result<(ScoreCost, FitError)> {
    let rows: Vec<(Vec<f64>, f64)> = measures
        .iter()
        .map(|m| {
            (
                vec![
                    1.0,
                    m.tokens as f64,
                    f64::from(m.candidates),
                    m.attended_context,
                ],
                m.seconds,
            )
        })
        .collect();
    let c = fit_relative(&rows)?;
    let cost = ScoreCost {
        call_s: c[0],
        token_s: c[1],
        candidate_s: c[2],
        attention_token_s: c[3],
    };
    let err = fit_error(measures.iter().map(|m| (cost.alone(m), m.seconds)));
    Ok((cost, err))
}

/// Median and largest relative error of (modelled, measured) pairs.
pub fn fit_error(pairs: impl Iterator<Item = (f64, f64)>) -> FitError {
    let mut errs: Vec<f64> = pairs
        .map(|(model, real)| ((model - real) / real).abs())
        .collect();
    errs.sort_by(f64::total_cmp);
    FitError {
        median: errs.get(errs.len() / 2).copied().unwrap_or(0.0),
        max: errs.last().copied().unwrap_or(0.0),
    }
}

/// Non-negative least squares on relative error: minimises sum ((x.c - y) / y)^2 with
/// c >= 0, by solving the normal equations and dropping the most negative
/// coefficient until none is negative (enough for a handful of features that are all
/// costs). Hand-written: a 5x5 solve does not justify a linear-algebra dependency.
fn fit_relative(rows: &[(Vec<f64>, f64)]) -> anyhow::Result<Vec<f64>> {
    let k = rows.first().map_or(0, |r| r.0.len());
    anyhow::ensure!(
        rows.len() >= k && k > 0,
        "a fit of {k} coefficients needs at least {k} measured calls, got {}",
        rows.len()
    );
    anyhow::ensure!(
        rows.iter().all(|(_, y)| *y > 0.0 && y.is_finite()),
        "every measured call must take a positive, finite time"
    );
    // A feature no measured call has (an older file's attention, say) is held at 0: it
    // would make the system singular.
    let mut active: Vec<usize> = (0..k)
        .filter(|&j| rows.iter().any(|(x, _)| x[j] != 0.0))
        .collect();
    anyhow::ensure!(!active.is_empty(), "the measured calls have no features");
    loop {
        let solved = solve_weighted(rows, &active).ok_or_else(|| {
            anyhow::anyhow!("the measured calls do not determine the fit (singular)")
        })?;
        let worst = solved
            .iter()
            .enumerate()
            .filter(|(_, c)| **c < 0.0)
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        match worst {
            Some(i) => {
                active.remove(i);
                anyhow::ensure!(!active.is_empty(), "no non-negative fit exists");
            }
            None => {
                let mut c = vec![0.0; k];
                for (slot, value) in active.iter().zip(solved) {
                    c[*slot] = value;
                }
                return Ok(c);
            }
        }
    }
}

/// Solves the normal equations of the relative-error problem on the `active` features.
fn solve_weighted(rows: &[(Vec<f64>, f64)], active: &[usize]) -> Option<Vec<f64>> {
    let k = active.len();
    // A^T A c = A^T b with rows scaled by 1/y (so b is all ones).
    let mut m = vec![vec![0.0; k + 1]; k];
    for (x, y) in rows {
        let xs: Vec<f64> = active.iter().map(|&j| x[j] / y).collect();
        for i in 0..k {
            for j in 0..k {
                m[i][j] += xs[i] * xs[j];
            }
            m[i][k] += xs[i];
        }
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..k {
        let pivot = (col..k).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..k).map(|i| m[i][k] / m[i][i]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fit_recovers_known_coefficients() {
        let truth = GenerateCost {
            call_s: 0.002,
            prefill_token_s: 1e-5,
            step_s: 3e-4,
            step_sequence_s: 2e-5,
            attention_token_s: 1e-8,
        };
        let mut measures = vec![];
        for (i, n) in [1u32, 2, 4, 8, 16, 32, 64].into_iter().enumerate() {
            for p in [20u32, 60, 200] {
                let longest = 30 + 7 * i as u32 + p / 10;
                let tokens: Vec<u32> = (0..n).map(|j| longest - (j % 3) * longest / 4).collect();
                let mut m = GenerateMeasure {
                    n,
                    prompt_tokens: p + 5,
                    uncached_prompt_tokens: p,
                    longest,
                    sampled_tokens: tokens.iter().map(|t| u64::from(*t)).sum(),
                    attended_context: attended_context(p + 5, tokens.iter().copied()),
                    seconds: 0.0,
                };
                m.seconds = truth.alone(&m);
                measures.push(m);
            }
        }
        let (fit, err) = fit_generate(&measures).unwrap();
        for (a, b) in [
            (fit.call_s, truth.call_s),
            (fit.prefill_token_s, truth.prefill_token_s),
            (fit.step_s, truth.step_s),
            (fit.step_sequence_s, truth.step_sequence_s),
            (fit.attention_token_s, truth.attention_token_s),
        ] {
            assert!((a - b).abs() <= 1e-6 * b, "{a} vs {b}");
        }
        assert!(err.max < 1e-9, "{err:?}");
    }

    /// `count` candidates of `each` tokens, taking `seconds(tokens, candidates, context)`.
    fn score_measure(
        count: u32,
        each: u64,
        seconds: impl Fn(f64, f64, f64) -> f64,
    ) -> ScoreMeasure {
        let context = score_attended_context(std::iter::repeat_n(each, count as usize));
        let tokens = each * u64::from(count);
        ScoreMeasure {
            candidates: count,
            tokens,
            attended_context: context,
            seconds: seconds(tokens as f64, f64::from(count), context),
        }
    }

    #[test]
    fn a_score_fit_tells_long_candidates_from_many_short_ones() {
        // The same tokens cost more as fewer, longer candidates: attention.
        let truth = |tokens: f64, _: f64, context: f64| 5e-4 + 4e-5 * tokens + 2.5e-7 * context;
        let measures: Vec<ScoreMeasure> = [(1u32, 100u64), (4, 40), (4, 390), (12, 150), (12, 330)]
            .into_iter()
            .map(|(count, each)| score_measure(count, each, truth))
            .collect();
        let (fit, err) = fit_score(&measures).unwrap();
        assert!((fit.attention_token_s - 2.5e-7).abs() < 1e-12, "{fit:?}");
        assert!((fit.token_s - 4e-5).abs() < 1e-10, "{fit:?}");
        assert!(err.max < 1e-9, "{err:?}");
        // Without the attention term, 4 x 390 tokens would be modelled at the cost per
        // token of 40-token candidates: 30% short here.
        let long = &measures[2];
        let linear = fit.call_s + fit.token_s * long.tokens as f64;
        assert!(linear < 0.75 * long.seconds, "{linear} vs {}", long.seconds);
        assert!((fit.alone(long) - long.seconds).abs() < 1e-9);
    }

    #[test]
    fn a_coefficient_the_data_wants_negative_is_held_at_zero() {
        // Time falls slightly with candidates: the fit keeps that coefficient at 0.
        let measures: Vec<ScoreMeasure> = [(1u32, 100u64), (4, 95), (16, 94), (64, 95), (8, 10)]
            .into_iter()
            .map(|(count, each)| {
                score_measure(count, each, |tokens, candidates, _| {
                    0.001 + 2e-5 * tokens - 1e-6 * candidates
                })
            })
            .collect();
        let (fit, err) = fit_score(&measures).unwrap();
        assert_eq!(fit.candidate_s, 0.0);
        assert!(fit.token_s > 0.0 && fit.call_s > 0.0, "{fit:?}");
        assert!(err.max < 0.05, "{err:?}");
        assert!(fit_score(&measures[..3]).is_err());
    }
}
