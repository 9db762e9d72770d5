//! Compute-optimal search (Snell et al. §3.2): estimate the question's difficulty from
//! a few probe samples scored by the PRM (the model's own prediction, no ground
//! truth), put it in one of five bins, and run the (strategy, parameters) that the
//! policy table says is best for that bin and budget.
//!
//! The table is fitted offline by `ponder eval` and shipped as JSON beside the models;
//! without one, [`Policy::default`] applies (documented in docs/strategies.md). The
//! probes count against the budget; sampling strategies reuse them as candidates.

use super::sampling::{sample, Stop};
use super::{Scored, StrategyKind};
use crate::context::Context;
use crate::error::{Result, SearchError};
use crate::traits::{Generate, Score};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path as FsPath;

pub const BINS: usize = 5;

/// The fitted policy: probes, bin edges and the best strategy per (budget, bin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Probe samples per question.
    pub probes: u32,
    /// Four ascending thresholds on the probes' mean PRM score: below the first is
    /// bin 5 (hardest), at or above the last is bin 1 (easiest).
    pub bin_edges: [f32; BINS - 1],
    /// Budget (generations) -> strategy spec per bin, easiest first.
    pub table: BTreeMap<u32, [String; BINS]>,
    /// How the table was made (command, data), for the record.
    #[serde(default)]
    pub fitted_by: String,
}

impl Default for Policy {
    /// Unfitted defaults following the paper's qualitative finding: on easy questions
    /// parallel sampling with a verifier vote is best; on hard ones, beam search.
    fn default() -> Self {
        let row = |easy: &str, hard: &str| -> [String; BINS] {
            [
                easy.into(),
                easy.into(),
                easy.into(),
                hard.into(),
                hard.into(),
            ]
        };
        Self {
            probes: 4,
            bin_edges: [0.2, 0.4, 0.6, 0.8],
            table: BTreeMap::from([
                (4, row("weighted_best_of_n", "weighted_best_of_n")),
                (16, row("weighted_best_of_n", "beam_search:4")),
                (64, row("weighted_best_of_n", "beam_search:4")),
            ]),
            fitted_by: "built-in default (not fitted)".into(),
        }
    }
}

impl Policy {
    pub fn from_file(path: &FsPath) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SearchError::invalid(format!("reading {}: {e}", path.display())))?;
        let p: Policy = serde_json::from_str(&text)
            .map_err(|e| SearchError::invalid(format!("{}: {e}", path.display())))?;
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<()> {
        if self.table.is_empty() {
            return Err(SearchError::invalid("policy table is empty"));
        }
        if !self.bin_edges.windows(2).all(|w| w[0] <= w[1]) {
            return Err(SearchError::invalid("policy bin_edges must ascend"));
        }
        for row in self.table.values() {
            for spec in row {
                let s = StrategyKind::parse(spec)?;
                if s == StrategyKind::ComputeOptimal {
                    return Err(SearchError::invalid(
                        "a policy cannot choose compute_optimal itself",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Bin 0 (easiest) ..= 4 (hardest) for a mean probe score.
    pub fn bin(&self, mean_score: f32) -> usize {
        let above = self.bin_edges.iter().filter(|&&e| mean_score >= e).count();
        BINS - 1 - above
    }

    /// The strategy for `bin` at `budget`: the row of the largest budget <= `budget`
    /// (the smallest row if none is).
    pub fn choose(&self, budget: u32, bin: usize) -> StrategyKind {
        let row = self
            .table
            .range(..=budget)
            .next_back()
            .or_else(|| self.table.iter().next())
            .map(|(_, r)| r)
            .expect("validated: the table is not empty");
        StrategyKind::parse(&row[bin.min(BINS - 1)]).expect("validated specs parse")
    }
}

/// What compute-optimal decided, for the response and for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub bin: usize,
    pub mean_probe_score: f32,
    pub chosen: StrategyKind,
}

/// Runs compute-optimal search; returns the candidates and the decision.
pub async fn compute_optimal<G: Generate, S: Score>(
    ctx: &mut Context<'_, G, S>,
    policy: &Policy,
) -> Result<(Vec<Scored>, Decision)> {
    let budget = ctx.ledger.generations_left();
    let probes_n = policy.probes.min(budget).max(1);
    let probes = sample(
        ctx,
        StrategyKind::WeightedBestOfN,
        probes_n,
        probes_n,
        1,
        Stop::Never,
        vec![],
    )
    .await?;
    let scores: Vec<f32> = probes.iter().filter_map(|p| p.score).collect();
    let mean = if scores.is_empty() {
        0.0
    } else {
        scores.iter().sum::<f32>() / scores.len() as f32
    };
    let bin = policy.bin(mean);
    let chosen = policy.choose(budget, bin);
    let left = ctx.ledger.generations_left();
    let decision = Decision {
        bin,
        mean_probe_score: mean,
        chosen,
    };
    if left == 0 {
        return Ok((probes, decision));
    }
    let more = super::run(ctx, chosen, left, probes).await?;
    Ok((more, decision))
}
