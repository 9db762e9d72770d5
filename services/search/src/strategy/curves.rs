//! Fitted accuracy curves: what a question of each difficulty bin gains from more
//! generations under the policy. Stored in the policy file (schema 2) by the fits that
//! write it, and read by load-adaptive budgets, which grant a question generations only
//! while its curve pays for them (docs/load-adaptive.md).
//!
//! Each point is the accuracy of the policy's own choice at one budget for the
//! questions of one bin, so it already includes which model and strategy the policy
//! runs there; the model is recorded for the reader.

use crate::error::{Result, SearchError};
use serde::{Deserialize, Serialize};

/// One (model, bin, budget) cell with its 95% interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccuracyPoint {
    /// The model the policy's choice runs on (None: the probe model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// 1 (easiest) ..= 5 (hardest), as in `SolveResponse.difficulty_bin`.
    pub bin: u8,
    /// The budget in generations (a key of the policy's table).
    pub generations: u32,
    pub accuracy: f64,
    /// Wilson 95% interval.
    pub low: f64,
    pub high: f64,
    /// Questions of the bin the accuracy was measured on.
    pub questions: u32,
}

impl AccuracyPoint {
    /// A point from a count of correct answers out of `questions`.
    pub fn measured(
        model: Option<String>,
        bin: u8,
        generations: u32,
        correct: u32,
        questions: u32,
    ) -> Self {
        let (low, high) = wilson(correct, questions);
        Self {
            model,
            bin,
            generations,
            accuracy: correct as f64 / questions.max(1) as f64,
            low,
            high,
            questions,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        let ok = (1..=super::policy::BINS as u8).contains(&self.bin)
            && self.generations >= 1
            && (0.0..=1.0).contains(&self.accuracy)
            && self.low <= self.accuracy
            && self.accuracy <= self.high;
        if !ok {
            return Err(SearchError::invalid(format!(
                "policy accuracy point {self:?}: bin must be 1..=5, generations >= 1, and low <= accuracy <= high within [0, 1]"
            )));
        }
        Ok(())
    }
}

/// The Wilson score interval (95%) of `correct` out of `n`; (0, 1) when `n` is 0.
pub fn wilson(correct: u32, n: u32) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n_f) = (1.96_f64, n as f64);
    let p = correct as f64 / n_f;
    let denom = 1.0 + z * z / n_f;
    let centre = (p + z * z / (2.0 * n_f)) / denom;
    let half = z * ((p * (1.0 - p) + z * z / (4.0 * n_f)) / n_f).sqrt() / denom;
    // The interval holds the rate exactly (rounding could put 1.0 just above the
    // upper end).
    ((centre - half).clamp(0.0, p), (centre + half).clamp(p, 1.0))
}

/// Accuracy against budget for one bin, or pooled over all bins (weighted by their
/// questions) when `bin` is None: `(generations, accuracy)` ascending by generations.
pub fn curve(points: &[AccuracyPoint], bin: Option<usize>) -> Vec<(u32, f64)> {
    let mut by_budget: std::collections::BTreeMap<u32, (f64, f64)> = Default::default();
    for p in points
        .iter()
        .filter(|p| bin.is_none_or(|b| p.bin as usize == b + 1))
    {
        let e = by_budget.entry(p.generations).or_default();
        e.0 += p.accuracy * p.questions as f64;
        e.1 += p.questions as f64;
    }
    by_budget
        .into_iter()
        .filter(|(_, (_, n))| *n > 0.0)
        .map(|(g, (sum, n))| (g, sum / n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_brackets_the_rate() {
        let (lo, hi) = wilson(50, 100);
        assert!((lo - 0.404).abs() < 0.002 && (hi - 0.596).abs() < 0.002);
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, hi) = wilson(10, 10);
        assert!(lo > 0.69 && hi == 1.0);
        for n in 1..200 {
            for c in [0, 1, n / 2, n - 1, n] {
                let (lo, hi) = wilson(c, n);
                let p = c as f64 / n as f64;
                assert!(lo <= p && p <= hi && lo >= 0.0 && hi <= 1.0, "{c}/{n}");
            }
        }
    }

    #[test]
    fn curves_per_bin_and_pooled() {
        let p = |bin, g, correct, n| AccuracyPoint::measured(None, bin, g, correct, n);
        let points = vec![
            p(1, 1, 9, 10),
            p(1, 4, 10, 10),
            p(2, 1, 1, 30),
            p(2, 4, 15, 30),
        ];
        assert_eq!(curve(&points, Some(0)), vec![(1, 0.9), (4, 1.0)]);
        assert_eq!(curve(&points, Some(1)), vec![(1, 1.0 / 30.0), (4, 0.5)]);
        assert_eq!(curve(&points, None), vec![(1, 0.25), (4, 0.625)]);
        assert!(curve(&points, Some(4)).is_empty());
        assert!(p(6, 1, 1, 1).check().is_err());
        assert!(p(1, 1, 1, 2).check().is_ok());
    }
}
