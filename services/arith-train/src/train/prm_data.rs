//! PRM training data: solutions split into steps, each labelled by the exact
//! checker, encoded the way the engine's token-probability PRM reads them.
//!
//! Labels are `on_track` (this step and all before it are exactly right), so the
//! last step's score estimates whether the whole solution is correct.
//! Sources: the generator's own samples (the real distribution the PRM must judge)
//! and, for bootstrapping and tests, canonical solutions with one injected slip.

use super::trainer::Encoded;
use crate::vocab::{Vocab, NEGATIVE, POSITIVE, STEP_TAG};
use anyhow::{Context, Result};
use ponder_arith::checker::check_solution;
use ponder_arith::solution;
use ponder_arith::task;
use ponder_engine::prm::{Chain, PrmConfig, ReadoutConfig};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The `prm.json` written next to the PRM's weights.
pub fn prm_config(chain: Chain) -> PrmConfig {
    PrmConfig {
        step_tag: STEP_TAG.into(),
        readout: ReadoutConfig::TokenProb {
            positive: POSITIVE.into(),
            negative: NEGATIVE.into(),
        },
        question_template: "Q: {question}\n".into(),
        step_suffix: String::new(),
        after_tag: "\n".into(),
        chain,
        members: vec![],
        combine: Default::default(),
    }
}

/// A question, its solution's lines (steps and the answer line) and their labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledSolution {
    pub question: String,
    pub steps: Vec<String>,
    pub labels: Vec<bool>,
    pub correct: bool,
    /// Which model and temperature sampled it (`name@T`), when it was sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Splits `text` into lines and labels each with the checker's `on_track`.
pub fn label(question: &str, text: &str) -> LabelledSolution {
    let checked = check_solution(question, text);
    let body = text.strip_suffix('\n').unwrap_or(text);
    let steps: Vec<String> = if body.is_empty() {
        vec![]
    } else {
        body.split('\n').map(String::from).collect()
    };
    let labels = checked.steps.iter().map(|s| s.on_track).collect();
    LabelledSolution {
        question: question.into(),
        steps,
        labels,
        correct: checked.correct,
        source: None,
    }
}

/// The same solution labelled step by step with the checker's `local_ok` (each line
/// is the right step from the expression stated before it) instead of `on_track`.
pub fn local_labels(ex: &LabelledSolution) -> LabelledSolution {
    let checked = check_solution(&ex.question, &ex.steps.join("\n"));
    LabelledSolution {
        labels: checked.steps.iter().map(|s| s.local_ok).collect(),
        ..ex.clone()
    }
}

/// The labelled samples of a JSONL file written by `ponder-arith sample`.
pub fn read_jsonl(path: &std::path::Path) -> Result<Vec<LabelledSolution>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| {
                format!("{} line {}: not a labelled sample", path.display(), i + 1)
            })
        })
        .collect()
}

/// Token ids as the engine builds them (`Q: <q>\n`, then each step followed by
/// the tag, `\n` between steps) and the (tag position, label) pairs.
pub fn encode(vocab: &Vocab, ex: &LabelledSolution) -> Result<Encoded> {
    let cfg = prm_config(Chain::None);
    let tag = vocab.id(STEP_TAG)?;
    let mut ids = vocab.encode(&cfg.question_template.replace("{question}", &ex.question))?;
    let mut tags = Vec::with_capacity(ex.steps.len());
    for (i, (step, ok)) in ex.steps.iter().zip(&ex.labels).enumerate() {
        if i > 0 {
            ids.extend(vocab.encode(&cfg.after_tag)?);
        }
        ids.extend(vocab.encode(&format!("{step}{}", cfg.step_suffix))?);
        tags.push((ids.len(), *ok));
        ids.push(tag);
    }
    Ok(Encoded {
        loss_on: vec![],
        ids,
        tags,
    })
}

/// A canonical solution, or (with probability 1/2) one with a slip at a random
/// step and a faithful continuation; labelled by the checker.
pub fn synthetic(
    rng: &mut impl Rng,
    levels: &[(u8, f64)],
    mix: task::TrainingMix,
) -> Result<LabelledSolution> {
    let problem = task::train_question(task::pick_level(levels, rng), mix, rng);
    let text = if rng.random_bool(0.5) {
        match super::data::wrong_attempt(&problem.question, rng)? {
            Some(t) => t,
            None => solution::solve(&problem.question)?.text(),
        }
    } else {
        solution::solve(&problem.question)?.text()
    };
    Ok(label(&problem.question, &text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponder_engine::tokenizer::TextCodec;
    use rand::SeedableRng;

    #[test]
    fn training_encoding_matches_what_the_engine_scores() {
        let vocab = Vocab::new().unwrap();
        let codec = TextCodec::from_gguf(vocab.tokenizer().clone(), None, vec![]);
        let prm = ponder_engine::prm::Prm::new(
            prm_config(Chain::None),
            &codec,
            &[],
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let ex = synthetic(
                &mut rng,
                super::super::data::DEFAULT_LEVEL_MIX,
                task::TrainingMix::FIRST,
            )
            .unwrap();
            let ours = encode(&vocab, &ex).unwrap();
            let (ids, tags) = prm.encode(&codec, &ex.question, &ex.steps).unwrap();
            assert_eq!(ours.ids, ids);
            assert_eq!(ours.tags.iter().map(|t| t.0).collect::<Vec<_>>(), tags);
            // A wrong step and everything after it are labelled negative (even when a
            // slip happens to reach the right answer), and an all-positive solution is correct.
            match ex.labels.iter().position(|l| !l) {
                Some(first_bad) => assert!(ex.labels[first_bad..].iter().all(|l| !l)),
                None => assert!(ex.correct),
            }
        }
    }
}
