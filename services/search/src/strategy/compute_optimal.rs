//! Compute-optimal search (Snell et al. §3.2): estimate the question's difficulty from
//! a few probe samples scored by the PRM (the model's own prediction, no ground
//! truth), put it in one of five bins, and run the (strategy, parameters) that the
//! policy table says is best for that bin and budget.
//!
//! The table is fitted offline by `ponder eval` and shipped as JSON beside the models;
//! without one, [`Policy::builtin`] applies (documented in docs/strategies.md). The
//! probes count against the budget; sampling strategies reuse them as candidates.
//!
//! A policy's strategy specs are parsed once, when it is loaded (a [`Row`] holds
//! parsed strategies), so routing a query is a table lookup.

use super::sampling::{sample, Stop};
use super::{Scored, StrategyKind};
use crate::context::Context;
use crate::error::{Result, SearchError};
use crate::traits::{Generate, Score};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::{Arc, LazyLock};

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
    /// Budget (generations) -> strategy per bin, easiest first.
    pub table: BTreeMap<u32, Row>,
    /// How the table was made (command, data), for the record.
    #[serde(default)]
    pub fitted_by: String,
}

/// One budget's strategies, one per bin, easiest first. Written in JSON as five
/// strategy specs (`"beam_search:4"`); parsed when the row is made, so a row cannot
/// hold a spec that does not parse, nor `compute_optimal` itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row([StrategyKind; BINS]);

impl Row {
    /// Parses one spec per bin, easiest first.
    pub fn parse<T: AsRef<str>>(specs: &[T]) -> Result<Self> {
        if specs.len() != BINS {
            return Err(SearchError::invalid(format!(
                "a policy row names {BINS} strategies (one per bin), got {}",
                specs.len()
            )));
        }
        let mut row = [StrategyKind::WeightedBestOfN; BINS];
        for (slot, spec) in row.iter_mut().zip(specs) {
            *slot = StrategyKind::parse(spec.as_ref())?;
            if *slot == StrategyKind::ComputeOptimal {
                return Err(SearchError::invalid(
                    "a policy cannot choose compute_optimal itself",
                ));
            }
        }
        Ok(Self(row))
    }

    /// The strategy for `bin` (0 = easiest; past the last bin, the last).
    pub fn get(&self, bin: usize) -> StrategyKind {
        self.0[bin.min(BINS - 1)]
    }

    pub fn strategies(&self) -> &[StrategyKind; BINS] {
        &self.0
    }
}

impl TryFrom<Vec<String>> for Row {
    type Error = SearchError;
    fn try_from(specs: Vec<String>) -> Result<Self> {
        Self::parse(&specs)
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let specs: Vec<String> = self.0.iter().map(StrategyKind::spec).collect();
        specs.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let specs = Vec::<String>::deserialize(d)?;
        Self::parse(&specs).map_err(serde::de::Error::custom)
    }
}

impl Default for Policy {
    /// Unfitted defaults following the paper's qualitative finding: on easy questions
    /// parallel sampling with a verifier vote is best; on hard ones, beam search.
    fn default() -> Self {
        let row = |easy: &str, hard: &str| {
            Row::parse(&[easy, easy, easy, hard, hard]).expect("built-in specs parse")
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
    /// The built-in policy ([`Policy::default`]), made once per process.
    pub fn builtin() -> Arc<Self> {
        static BUILTIN: LazyLock<Arc<Policy>> = LazyLock::new(|| Arc::new(Policy::default()));
        BUILTIN.clone()
    }

    pub fn from_file(path: &FsPath) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SearchError::invalid(format!("reading {}: {e}", path.display())))?;
        let p: Policy = serde_json::from_str(&text)
            .map_err(|e| SearchError::invalid(format!("{}: {e}", path.display())))?;
        p.validate()?;
        Ok(p)
    }

    /// What rows cannot check themselves: the table has a row, the edges ascend.
    pub fn validate(&self) -> Result<()> {
        if self.table.is_empty() {
            return Err(SearchError::invalid("policy table is empty"));
        }
        if !self.bin_edges.windows(2).all(|w| w[0] <= w[1]) {
            return Err(SearchError::invalid("policy bin_edges must ascend"));
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
        self.table
            .range(..=budget)
            .next_back()
            .or_else(|| self.table.iter().next())
            .map(|(_, row)| row.get(bin))
            .expect("validated: the table is not empty")
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
    ctx: &Context<'_, G, S>,
    policy: &Policy,
) -> Result<(Vec<Scored>, Decision)> {
    let budget = ctx.generations_left();
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
    let left = ctx.generations_left();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_parsed_when_the_policy_is_read_and_written_back_as_specs() {
        let json = r#"{"probes": 4, "bin_edges": [0.2, 0.4, 0.6, 0.8],
            "table": {"8": ["majority", "best_of_n", "weighted_best_of_n",
                            "beam_search:2", "revisions:3"]}}"#;
        let p: Policy = serde_json::from_str(json).unwrap();
        assert_eq!(
            p.table[&8].strategies()[3],
            StrategyKind::parse("beam_search:2").unwrap()
        );
        assert_eq!(p.choose(100, 0), StrategyKind::SelfConsistency);
        let back: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(back["table"]["8"][0], "self_consistency");
        assert_eq!(serde_json::from_value::<Policy>(back).unwrap(), p);
        for bad in [
            r#"["mcts", "best_of_n", "best_of_n", "best_of_n", "best_of_n"]"#,
            r#"["compute_optimal", "best_of_n", "best_of_n", "best_of_n", "best_of_n"]"#,
            r#"["best_of_n"]"#,
        ] {
            let json = format!(
                r#"{{"probes": 4, "bin_edges": [0.2, 0.4, 0.6, 0.8], "table": {{"8": {bad}}}}}"#
            );
            assert!(serde_json::from_str::<Policy>(&json).is_err(), "{bad}");
        }
        assert_eq!(
            Policy::builtin().choose(16, 4),
            StrategyKind::parse("beam_search:4").unwrap()
        );
    }
}
