//! The report's question sets, and the count that proves evaluation was walled off.
//!
//! Every figure is measured on two samplers: the independent one
//! ([`ponder_arith::eval_sampler`], the user's view of the grammar) and the training
//! mixture's styles restricted to the evaluation slice (the trainer's view). Both draw
//! only evaluation-slice questions, which the training stream rejects; [`Overlap`] checks
//! that on the questions measured, against the training stream redrawn step by step.

use crate::train::data::{sample_batch, DEFAULT_LEVEL_MIX};
use crate::train::trainer::step_rng;
use anyhow::Result;
use ponder_arith::eval_sampler;
use ponder_arith::slice::{canonical_form, slice_of, Slice};
use ponder_arith::task::{self, Problem};
use serde::Serialize;
use std::collections::HashSet;

/// Seeds of the report's sets (apart from the trainer's data seeds and the validation
/// set of its periodic evaluation).
pub const EVAL_SEED: u64 = 20_261_301;
pub const VALIDATION_SEED: u64 = 20_261_302;

/// The samplers a figure is reported on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampler {
    /// `ponder_arith::eval_sampler`: uniform trees and operands, written apart from
    /// the trainer.
    Independent,
    /// The training mixture's styles, evaluation slice only.
    TrainingStyle,
}

impl Sampler {
    pub const ALL: [Sampler; 2] = [Sampler::Independent, Sampler::TrainingStyle];

    pub fn name(self) -> &'static str {
        match self {
            Sampler::Independent => "independent",
            Sampler::TrainingStyle => "training-style",
        }
    }

    /// `per_level` evaluation questions of each level, in level order.
    /// `mix` is the training stream whose styles the training-style set follows.
    pub fn eval_set(self, per_level: usize, mix: task::TrainingMix) -> Vec<Problem> {
        match self {
            Sampler::Independent => eval_sampler::eval_set(EVAL_SEED, per_level),
            Sampler::TrainingStyle => {
                task::styled_set(Slice::Evaluation, EVAL_SEED, per_level, mix)
            }
        }
    }
}

/// Questions for fitting thresholds: the independent sampler in the validation slice.
pub fn threshold_set(per_level: usize) -> Vec<Problem> {
    eval_sampler::validation_set(VALIDATION_SEED, per_level)
}

/// Evaluation questions against training questions.
#[derive(Debug, Clone, Serialize)]
pub struct Overlap {
    /// Distinct evaluation questions measured (both samplers, canonical forms).
    pub eval_questions: usize,
    /// Distinct questions of the training stream redrawn (`steps` steps of the ladder's
    /// data seed).
    pub training_questions: usize,
    pub steps: u64,
    /// Evaluation questions that are also training questions: must be 0.
    pub shared: usize,
    /// Evaluation questions outside the evaluation slice: must be 0.
    pub outside_evaluation_slice: usize,
}

impl Overlap {
    /// Redraws the first `steps` batches of the training stream (`mix`) seeded `seed` and
    /// counts what `eval` shares with them.
    pub fn measure(
        eval: &[&Problem],
        mix: task::TrainingMix,
        seed: u64,
        steps: u64,
        batch_chars: usize,
    ) -> Result<Self> {
        let mut eval_forms = HashSet::new();
        let mut outside = 0;
        for p in eval {
            let expr = task::parse(&p.question)?;
            outside += (slice_of(&expr) != Slice::Evaluation) as usize;
            eval_forms.insert(canonical_form(&expr));
        }
        let mut training = HashSet::new();
        for step in 0..steps {
            let mut rng = step_rng(seed, step);
            for ex in sample_batch(&mut rng, DEFAULT_LEVEL_MIX, mix, 0.2, batch_chars)? {
                let line = ex.prompt.lines().next().unwrap_or_default();
                let question = line.trim_start_matches("Q: ");
                training.insert(canonical_form(&task::parse(question)?));
            }
        }
        Ok(Overlap {
            eval_questions: eval_forms.len(),
            training_questions: training.len(),
            steps,
            shared: eval_forms.intersection(&training).count(),
            outside_evaluation_slice: outside,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_samplers_draw_only_evaluation_questions_and_share_none_with_training() {
        let mix = task::TrainingMix::new(0.5).unwrap();
        let sets: Vec<Vec<Problem>> = Sampler::ALL.iter().map(|s| s.eval_set(20, mix)).collect();
        let eval: Vec<&Problem> = sets.iter().flatten().collect();
        let o = Overlap::measure(&eval, mix, 11, 40, 4096).unwrap();
        assert!(o.eval_questions > 200, "{o:?}");
        assert!(o.training_questions > 400, "{o:?}");
        assert_eq!((o.shared, o.outside_evaluation_slice), (0, 0), "{o:?}");
        // Positive control: the training stream's own first batch is all shared and all
        // outside the evaluation slice.
        let mut rng = step_rng(11, 0);
        let own: Vec<Problem> = sample_batch(&mut rng, DEFAULT_LEVEL_MIX, mix, 0.2, 4096)
            .unwrap()
            .iter()
            .map(|ex| {
                let q = ex.prompt.lines().next().unwrap().trim_start_matches("Q: ");
                Problem::from_expr(&task::parse(q).unwrap())
            })
            .collect();
        let refs: Vec<&Problem> = own.iter().collect();
        let o = Overlap::measure(&refs, mix, 11, 1, 4096).unwrap();
        assert_eq!(o.shared, o.eval_questions, "{o:?}");
        assert_eq!(o.outside_evaluation_slice, own.len(), "{o:?}");
    }
}
