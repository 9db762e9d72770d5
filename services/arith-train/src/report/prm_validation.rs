//! The PRM trainer's periodic evaluation: how well a checkpoint ranks the labelled
//! samples of held-out questions, scored through the engine exactly as a verifier node
//! scores them.
//!
//! Why AUROC and not the training loss: the training batches are class-balanced and
//! mix in synthetic slips, so their loss says little about the real samples. Step and
//! final-answer AUROC on real samples is what the shipped verifier is judged by
//! (docs/results.md), so the trainer's patience rule stops on it.

use super::measure::IN_FLIGHT_SEQUENCES;
use super::stats::{final_auroc, step_auroc, ScoredSample};
use crate::train::prm_data::LabelledSolution;
use anyhow::{Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use ponder_engine::{LoadOptions, ModelWorker, ScoreRequest, WorkerConfig};
use std::collections::HashMap;
use std::path::Path;

/// Splits labelled samples by question: the distinct questions, in order of first
/// appearance, go one in `every` to validation (all their samples), the rest to
/// training, so that no validation question is trained on. At most `cap` validation
/// samples are kept, evenly spaced, to bound the evaluation's cost.
pub fn split_validation(
    pool: Vec<LabelledSolution>,
    every: usize,
    cap: usize,
) -> (Vec<LabelledSolution>, Vec<LabelledSolution>) {
    let every = every.max(1);
    let mut order: HashMap<String, usize> = HashMap::new();
    let (mut train, mut validation) = (vec![], vec![]);
    for s in pool {
        let next = order.len();
        let index = *order.entry(s.question.clone()).or_insert(next);
        if index.is_multiple_of(every) {
            validation.push(s);
        } else {
            train.push(s);
        }
    }
    if validation.len() > cap {
        let stride = validation.len() as f64 / cap as f64;
        validation = (0..cap)
            .map(|i| validation[(i as f64 * stride) as usize].clone())
            .collect();
    }
    (train, validation)
}

/// The mean of the step-level and final-answer AUROC of the PRM in `dir` on `samples`,
/// in points (0-100).
pub async fn validation_auroc(dir: &Path, samples: &[LabelledSolution]) -> Result<f64> {
    let worker = ModelWorker::spawn(
        ponder_engine::load(dir, &LoadOptions::default())
            .with_context(|| format!("loading the PRM checkpoint {}", dir.display()))?,
        WorkerConfig::default(),
    );
    let scored = score_all(&worker, samples).await?;
    let step = step_auroc(&scored).context("the validation samples hold one step class only")?;
    let last = final_auroc(&scored).context("the validation samples hold one answer class only")?;
    Ok(50.0 * (step + last))
}

async fn score_all(
    worker: &ModelWorker,
    samples: &[LabelledSolution],
) -> Result<Vec<ScoredSample>> {
    let samples: Vec<&LabelledSolution> = samples.iter().filter(|s| !s.steps.is_empty()).collect();
    stream::iter(samples)
        .map(|s| async move {
            let req = ScoreRequest {
                question: s.question.clone(),
                candidates: vec![s.steps.clone()],
            };
            let mut resp = worker.score(req).await?;
            let scores = resp
                .scores
                .pop()
                .context("the verifier returned no scores")?;
            anyhow::ensure!(
                scores.len() == s.labels.len(),
                "{} scores for {} labelled lines",
                scores.len(),
                s.labels.len()
            );
            Ok::<_, anyhow::Error>(ScoredSample {
                scores,
                on_track: s.labels.clone(),
                correct: s.correct,
            })
        })
        .buffered(IN_FLIGHT_SEQUENCES)
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(question: &str, correct: bool) -> LabelledSolution {
        LabelledSolution {
            question: question.into(),
            steps: vec!["Answer: 1".into()],
            labels: vec![correct],
            correct,
            source: None,
        }
    }

    #[test]
    fn validation_questions_never_reach_training() {
        let pool: Vec<LabelledSolution> = (0..40)
            .flat_map(|q| {
                [
                    sample(&format!("{q}+1"), true),
                    sample(&format!("{q}+1"), false),
                ]
            })
            .collect();
        let (train, validation) = split_validation(pool, 4, 1000);
        assert_eq!((train.len(), validation.len()), (60, 20));
        assert!(validation
            .iter()
            .all(|v| train.iter().all(|t| t.question != v.question)));
        let (_, capped) = split_validation(train, 3, 7);
        assert_eq!(capped.len(), 7);
    }
}
