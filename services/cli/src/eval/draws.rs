//! One question's scored draw: every sample's answer and aggregated PRM score, in the
//! order a best-of-N query draws them, and what the draw cost. Sampling strategies
//! and compute-optimal's difficulty probes are replayed from it.

use super::Record;
use ponder_search::replay::replay;
use ponder_search::strategy::Scored;
use ponder_search::{StrategyKind, Usage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub answer: Option<String>,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Draw {
    pub question: String,
    pub level: u8,
    pub truth: String,
    pub samples: Vec<Sample>,
    pub generator_tokens: u64,
    pub verifier_tokens: u64,
    pub flops: f64,
    pub latency_s: f64,
}

impl Draw {
    pub fn new(
        problem: &ponder_arith::task::Problem,
        samples: &[Scored],
        usage: Usage,
        latency_s: f64,
    ) -> Self {
        Self {
            question: problem.question.clone(),
            level: problem.level,
            truth: problem.answer.to_string(),
            samples: samples
                .iter()
                .map(|s| Sample {
                    answer: s.answer.clone(),
                    score: s.score.unwrap_or(0.0),
                })
                .collect(),
            generator_tokens: usage.generator_tokens,
            verifier_tokens: usage.verifier_tokens,
            flops: usage.flops,
            latency_s,
        }
    }

    fn scored(&self) -> Vec<Scored> {
        self.samples
            .iter()
            .map(|s| Scored {
                text: String::new(),
                answer: s.answer.clone(),
                score: Some(s.score),
            })
            .collect()
    }

    /// Compute-optimal's difficulty estimate at `budget`: the mean PRM score of its
    /// probes, which are the draw's first `min(probes, budget)` samples.
    pub fn probe_mean(&self, probes: u32, budget: u32) -> f32 {
        let k = (probes.min(budget) as usize).clamp(1, self.samples.len());
        self.samples[..k].iter().map(|s| s.score).sum::<f32>() / k as f32
    }

    /// The record `strategy` at `budget` would have produced. Tokens, FLOPs and
    /// latency are the draw's pro rata (the draw does not keep per-sample costs).
    /// `index`: the question's position in the set.
    pub fn replay(
        &self,
        index: usize,
        strategy: StrategyKind,
        budget: u32,
    ) -> anyhow::Result<Record> {
        let r = replay(strategy, budget, &self.scored())?;
        let share = r.generations as f64 / self.samples.len() as f64;
        let answer = r.answer.unwrap_or_default();
        Ok(Record {
            index,
            question: self.question.clone(),
            level: self.level,
            truth: self.truth.clone(),
            correct: answer == self.truth,
            answer,
            strategy: strategy.spec(),
            chosen: strategy.spec(),
            difficulty_bin: 0,
            budget,
            generations: r.generations,
            generator_tokens: (self.generator_tokens as f64 * share).round() as u64,
            verifier_tokens: (self.verifier_tokens as f64 * share).round() as u64,
            flops: self.flops * share,
            latency_s: self.latency_s * share,
            replayed: true,
            model: String::new(),
        })
    }
}

pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(i, l)| {
            let l = l?;
            serde_json::from_str(&l)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}
