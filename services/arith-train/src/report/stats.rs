//! The verifier's figures from scored, checker-labelled samples: AUROC at step and
//! final-answer level, and first-error identification in the style of ProcessBench.
//!
//! Why first-error identification beside AUROC: a search keeps or prunes a partial
//! solution by comparing its step scores to a threshold. AUROC says the scores rank
//! right on average; the first-error figure says whether one fixed threshold finds the
//! step where a wrong solution went wrong without rejecting right ones. The threshold is
//! fitted on validation questions ([`fit_threshold`]) and only then applied to the test
//! questions.

use serde::Serialize;

/// One scored sample: the verifier's score per line and the checker's labels.
#[derive(Debug, Clone, Serialize)]
pub struct ScoredSample {
    pub scores: Vec<f32>,
    /// Per line: this line and every earlier one are right (`StepCheck::on_track`).
    pub on_track: Vec<bool>,
    /// The final answer is right.
    pub correct: bool,
}

impl ScoredSample {
    /// The first wrong line of a wrong solution; None for a right one, or for a wrong
    /// one whose lines are all right (it stopped before its answer).
    pub fn first_error(&self) -> Option<usize> {
        if self.correct {
            return None;
        }
        self.on_track.iter().position(|ok| !ok)
    }

    /// The first line scored below `threshold`, if any.
    pub fn first_flagged(&self, threshold: f32) -> Option<usize> {
        self.scores.iter().position(|&s| s < threshold)
    }
}

/// Area under the ROC curve of `scores` for binary `labels` (Mann-Whitney U,
/// ties counted half). `None` when one class is absent.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|p| p.1).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of ranks of positives, with average ranks for tied scores.
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += pairs[i..j].iter().filter(|p| p.1).count() as f64 * avg_rank;
        i = j;
    }
    let u = rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    Some(u / (positives * negatives) as f64)
}

/// Step-level AUROC (every line, labelled on-track or not) over `samples`.
pub fn step_auroc(samples: &[ScoredSample]) -> Option<f64> {
    let (scores, labels): (Vec<f32>, Vec<bool>) = samples
        .iter()
        .flat_map(|s| s.scores.iter().copied().zip(s.on_track.iter().copied()))
        .unzip();
    auroc(&scores, &labels)
}

/// Final-answer AUROC (the last line's score against the answer being right).
pub fn final_auroc(samples: &[ScoredSample]) -> Option<f64> {
    let (scores, labels): (Vec<f32>, Vec<bool>) = samples
        .iter()
        .filter_map(|s| Some((*s.scores.last()?, s.correct)))
        .unzip();
    auroc(&scores, &labels)
}

/// First-error identification at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FirstError {
    pub threshold: f32,
    /// Wrong solutions whose first flagged line is their first wrong line.
    pub located: usize,
    /// Wrong solutions with a first wrong line (those that stopped early are left out).
    pub wrong: usize,
    /// Right solutions with no line flagged.
    pub accepted: usize,
    pub right: usize,
}

impl FirstError {
    pub fn measure(samples: &[ScoredSample], threshold: f32) -> Self {
        let mut out = FirstError {
            threshold,
            ..Default::default()
        };
        for s in samples {
            if s.correct {
                out.right += 1;
                out.accepted += s.first_flagged(threshold).is_none() as usize;
            } else if let Some(first) = s.first_error() {
                out.wrong += 1;
                out.located += (s.first_flagged(threshold) == Some(first)) as usize;
            }
        }
        out
    }

    pub fn wrong_accuracy(&self) -> Option<f64> {
        (self.wrong > 0).then(|| self.located as f64 / self.wrong as f64)
    }

    pub fn right_accuracy(&self) -> Option<f64> {
        (self.right > 0).then(|| self.accepted as f64 / self.right as f64)
    }

    /// The harmonic mean of the two accuracies (ProcessBench's F1); None without both
    /// kinds of solution.
    pub fn f1(&self) -> Option<f64> {
        let (a, b) = (self.wrong_accuracy()?, self.right_accuracy()?);
        Some(if a + b == 0.0 {
            0.0
        } else {
            2.0 * a * b / (a + b)
        })
    }
}

/// The threshold with the best F1 on `validation` (candidates: up to 256 quantiles of
/// the validation scores, and 0.5). Ties go to the lower threshold.
pub fn fit_threshold(validation: &[ScoredSample]) -> f32 {
    let mut scores: Vec<f32> = validation
        .iter()
        .flat_map(|s| s.scores.iter().copied())
        .collect();
    scores.sort_by(f32::total_cmp);
    scores.dedup();
    let mut candidates = vec![0.5f32];
    let step = (scores.len() / 256).max(1);
    // A threshold just above a score flags that score: use midpoints between neighbours.
    for w in scores.windows(2).step_by(step) {
        candidates.push((w[0] + w[1]) / 2.0);
    }
    let mut best = (f64::NEG_INFINITY, 0.5f32);
    for &t in &candidates {
        let f1 = FirstError::measure(validation, t).f1().unwrap_or(0.0);
        if f1 > best.0 || (f1 == best.0 && t < best.1) {
            best = (f1, t);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(scores: &[f32], on_track: &[bool], correct: bool) -> ScoredSample {
        ScoredSample {
            scores: scores.to_vec(),
            on_track: on_track.to_vec(),
            correct,
        }
    }

    #[test]
    fn auroc_is_one_for_perfect_ranking_half_for_ties_and_none_without_a_class() {
        assert_eq!(
            auroc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auroc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(auroc(&[0.5, 0.7], &[true, true]), None);
        let a = auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((a - 0.75).abs() < 1e-12);
    }

    #[test]
    fn first_error_counts_located_errors_and_accepted_right_solutions() {
        let samples = [
            // Wrong at line 1, flagged at line 1: located.
            sample(&[0.9, 0.2, 0.1], &[true, false, false], false),
            // Wrong at line 2, flagged at line 1: too early, not located.
            sample(&[0.9, 0.3, 0.1], &[true, true, false], false),
            // Right, nothing flagged: accepted.
            sample(&[0.9, 0.8, 0.9], &[true, true, true], true),
            // Right but flagged: rejected.
            sample(&[0.9, 0.4, 0.9], &[true, true, true], true),
            // Wrong but stopped before its answer (no wrong line): left out.
            sample(&[0.9], &[true], false),
        ];
        let fe = FirstError::measure(&samples, 0.5);
        assert_eq!((fe.located, fe.wrong, fe.accepted, fe.right), (1, 2, 1, 2));
        assert_eq!(fe.f1(), Some(0.5));
        // Mutation guard: a threshold that flags nothing locates nothing.
        let none = FirstError::measure(&samples, 0.0);
        assert_eq!((none.located, none.accepted), (0, 2));
        assert_eq!(none.f1(), Some(0.0));
    }

    #[test]
    fn the_fitted_threshold_separates_what_can_be_separated() {
        // Right lines score 0.6-0.9, wrong lines 0.1-0.4: any threshold in (0.4, 0.6)
        // gives F1 = 1, 0.5 included, and the fit must find one.
        let samples: Vec<ScoredSample> = (0..20)
            .map(|i| {
                let hi = 0.6 + 0.015 * i as f32;
                let lo = 0.1 + 0.015 * i as f32;
                if i % 2 == 0 {
                    sample(&[hi, hi], &[true, true], true)
                } else {
                    sample(&[hi, lo, lo], &[true, false, false], false)
                }
            })
            .collect();
        let t = fit_threshold(&samples);
        assert!(t > 0.385 && t <= 0.6, "{t}");
        assert_eq!(FirstError::measure(&samples, t).f1(), Some(1.0));
        assert_eq!(step_auroc(&samples), Some(1.0));
        assert_eq!(final_auroc(&samples), Some(1.0));
    }
}
