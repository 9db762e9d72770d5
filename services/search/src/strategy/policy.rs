//! The compute-optimal policy: what to run for a predicted difficulty bin and budget.
//!
//! Fitted offline by `ponder eval --fit` and shipped as JSON beside the models; without
//! one, [`Policy::builtin`] applies (docs/strategies.md). A choice names a strategy
//! and, in a policy fitted over a ladder of generator models, the model to run it on and
//! how many generations to spend: on easy questions a small model with a vote may beat a
//! big model's single answer at a fraction of the FLOPs, on the hardest the big model
//! may win (Snell et al. §7). Budgets are counted in generations ([`Policy::table`]) or,
//! when the query has a FLOPs limit and the policy a FLOPs table, in FLOPs.
//!
//! Specs are parsed once, when the policy is read (a [`Row`] holds parsed choices), so
//! routing a query is a table lookup.

use super::curves::AccuracyPoint;
use crate::error::{Result, SearchError};
use crate::strategy::StrategyKind;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path as FsPath;
use std::sync::{Arc, LazyLock};

pub const BINS: usize = 5;

/// The fitted policy: probes, bin edges and the best choice per (budget, bin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Probe samples per question.
    pub probes: u32,
    /// The model the probes run on. None: the query's model when the policy names no
    /// model, else the cheapest model the cluster serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_model: Option<String>,
    /// Four ascending thresholds on the probes' mean PRM score: below the first is
    /// bin 5 (hardest), at or above the last is bin 1 (easiest).
    pub bin_edges: [f32; BINS - 1],
    /// Budget (generations) -> choice per bin, easiest first.
    pub table: BTreeMap<u32, Row>,
    /// FLOPs budgets, ascending: used when the query has a FLOPs limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flops_table: Vec<FlopsRow>,
    /// How the table was made (command, data), for the record.
    #[serde(default)]
    pub fitted_by: String,
    /// The file's schema: 1 (absent) without accuracy curves, 2 with them.
    #[serde(default = "schema_one")]
    pub schema: u32,
    /// Schema 2: the policy's accuracy per (model, bin, budget) with intervals, which
    /// load-adaptive budgets are granted from ([`super::curves`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accuracy: Vec<AccuracyPoint>,
}

/// The schema version a policy file with accuracy curves has.
pub const SCHEMA_WITH_ACCURACY: u32 = 2;

fn schema_one() -> u32 {
    1
}

/// The choices for queries whose FLOPs limit is at least `max_flops`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlopsRow {
    pub max_flops: f64,
    /// False: no probes at this budget (they would cost more than they save); every
    /// question runs the first bin's choice.
    #[serde(default = "probe_default", skip_serializing_if = "is_true")]
    pub probe: bool,
    pub row: Row,
}

fn probe_default() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// What to run: a strategy, on which model, with how many generations.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// None: the model the probes ran on.
    pub model: Option<String>,
    pub strategy: StrategyKind,
    /// Generations to spend, probes included (None: the whole budget). Never more than
    /// the query's budget.
    pub generations: Option<u32>,
}

impl Choice {
    /// A strategy on the probe model with the whole budget.
    pub fn strategy(strategy: StrategyKind) -> Self {
        Self {
            model: None,
            strategy,
            generations: None,
        }
    }

    /// Parses a spec (`"beam_search:4"`); a policy cannot choose compute_optimal.
    fn parse_spec(spec: &str) -> Result<StrategyKind> {
        let s = StrategyKind::parse(spec)?;
        if s == StrategyKind::ComputeOptimal {
            return Err(SearchError::invalid(
                "a policy cannot choose compute_optimal itself",
            ));
        }
        Ok(s)
    }
}

/// A choice in JSON: a strategy spec, or `{"model", "strategy", "generations"}`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ChoiceJson {
    Spec(String),
    Full {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        strategy: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generations: Option<u32>,
    },
}

impl TryFrom<ChoiceJson> for Choice {
    type Error = SearchError;
    fn try_from(j: ChoiceJson) -> Result<Self> {
        match j {
            ChoiceJson::Spec(spec) => Ok(Choice::strategy(Choice::parse_spec(&spec)?)),
            ChoiceJson::Full {
                model,
                strategy,
                generations,
            } => {
                if generations == Some(0) {
                    return Err(SearchError::invalid(
                        "a policy choice spends at least 1 generation",
                    ));
                }
                if model.as_deref() == Some("") {
                    return Err(SearchError::invalid("a policy choice's model id is empty"));
                }
                Ok(Choice {
                    model,
                    strategy: Choice::parse_spec(&strategy)?,
                    generations,
                })
            }
        }
    }
}

impl From<&Choice> for ChoiceJson {
    fn from(c: &Choice) -> Self {
        match (&c.model, c.generations) {
            (None, None) => ChoiceJson::Spec(c.strategy.spec()),
            (model, generations) => ChoiceJson::Full {
                model: model.clone(),
                strategy: c.strategy.spec(),
                generations,
            },
        }
    }
}

/// One budget's choices, one per bin, easiest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(Vec<Choice>);

impl Row {
    /// One strategy spec per bin, easiest first, each on the probe model.
    pub fn parse<T: AsRef<str>>(specs: &[T]) -> Result<Self> {
        let choices = specs
            .iter()
            .map(|s| Ok(Choice::strategy(Choice::parse_spec(s.as_ref())?)))
            .collect::<Result<Vec<_>>>()?;
        Self::new(choices)
    }

    /// One choice per bin, easiest first.
    pub fn new(choices: Vec<Choice>) -> Result<Self> {
        if choices.len() != BINS {
            return Err(SearchError::invalid(format!(
                "a policy row names {BINS} choices (one per bin), got {}",
                choices.len()
            )));
        }
        Ok(Self(choices))
    }

    /// The choice for `bin` (0 = easiest; past the last bin, the last).
    pub fn get(&self, bin: usize) -> &Choice {
        &self.0[bin.min(BINS - 1)]
    }

    pub fn choices(&self) -> &[Choice] {
        &self.0
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let json: Vec<ChoiceJson> = self.0.iter().map(ChoiceJson::from).collect();
        json.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let json = Vec::<ChoiceJson>::deserialize(d)?;
        let choices = json
            .into_iter()
            .map(Choice::try_from)
            .collect::<Result<Vec<_>>>()
            .map_err(serde::de::Error::custom)?;
        Self::new(choices).map_err(serde::de::Error::custom)
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
            probe_model: None,
            bin_edges: [0.2, 0.4, 0.6, 0.8],
            table: BTreeMap::from([
                (4, row("weighted_best_of_n", "weighted_best_of_n")),
                (16, row("weighted_best_of_n", "beam_search:4")),
                (64, row("weighted_best_of_n", "beam_search:4")),
            ]),
            flops_table: Vec::new(),
            fitted_by: "built-in default (not fitted)".into(),
            schema: 1,
            accuracy: Vec::new(),
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
        p.validate()
            .map_err(|e| SearchError::invalid(format!("{}: {e}", path.display())))?;
        Ok(p)
    }

    /// What rows cannot check themselves: the table has a row, the edges ascend, the
    /// FLOPs rows ascend and are positive.
    pub fn validate(&self) -> Result<()> {
        if self.table.is_empty() {
            return Err(SearchError::invalid("policy table is empty"));
        }
        if !self.bin_edges.windows(2).all(|w| w[0] <= w[1]) {
            return Err(SearchError::invalid("policy bin_edges must ascend"));
        }
        if !self
            .flops_table
            .iter()
            .all(|r| r.max_flops.is_finite() && r.max_flops > 0.0)
            || !self
                .flops_table
                .windows(2)
                .all(|w| w[0].max_flops < w[1].max_flops)
        {
            return Err(SearchError::invalid(
                "policy flops_table rows must have positive, strictly ascending max_flops",
            ));
        }
        match self.schema {
            1 if self.accuracy.is_empty() => {}
            1 => {
                return Err(SearchError::invalid(format!(
                    "policy accuracy needs \"schema\": {SCHEMA_WITH_ACCURACY}"
                )))
            }
            SCHEMA_WITH_ACCURACY => {}
            other => {
                return Err(SearchError::invalid(format!(
                "policy schema {other} is unknown: this server reads 1 and {SCHEMA_WITH_ACCURACY}"
            )))
            }
        }
        self.accuracy.iter().try_for_each(AccuracyPoint::check)
    }

    /// The generator models the policy names (its probe model and choices).
    pub fn models(&self) -> BTreeSet<&str> {
        self.named_models().collect()
    }

    /// Whether the policy names any model (a policy over a ladder of models); asked on
    /// every compute-optimal query, so it stops at the first.
    pub fn names_models(&self) -> bool {
        self.named_models().next().is_some()
    }

    fn named_models(&self) -> impl Iterator<Item = &str> {
        let rows = self
            .table
            .values()
            .chain(self.flops_table.iter().map(|r| &r.row));
        rows.flat_map(|r| r.0.iter().filter_map(|c| c.model.as_deref()))
            .chain(self.probe_model.as_deref())
    }

    /// The FLOPs row a query with `max_flops` reads: the largest `max_flops` <= the
    /// limit, or the first row; None without a limit or a FLOPs table.
    pub fn flops_row(&self, max_flops: Option<f64>) -> Option<&FlopsRow> {
        let limit = max_flops?;
        let first = self.flops_table.first()?;
        Some(
            self.flops_table
                .iter()
                .rev()
                .find(|r| r.max_flops <= limit)
                .unwrap_or(first),
        )
    }

    /// The fitted accuracy against budget for `bin` (0 = easiest), or pooled over the
    /// bins when it is not known yet; empty for a policy without curves (schema 1).
    pub fn curve(&self, bin: Option<usize>) -> Vec<(u32, f64)> {
        super::curves::curve(&self.accuracy, bin)
    }

    /// Bin 0 (easiest) ..= 4 (hardest) for a mean probe score.
    pub fn bin(&self, mean_score: f32) -> usize {
        let above = self.bin_edges.iter().filter(|&&e| mean_score >= e).count();
        BINS - 1 - above
    }

    /// The choice for `bin` at a budget of `generations` and, if the query has one, a
    /// FLOPs limit: with a limit and a FLOPs table, the row of the largest `max_flops`
    /// <= the limit (the smallest row if none is); otherwise the row of the largest
    /// generations budget <= `generations` (the smallest if none is).
    pub fn choose(&self, generations: u32, max_flops: Option<f64>, bin: usize) -> &Choice {
        if let Some(row) = self.flops_row(max_flops) {
            return row.row.get(bin);
        }
        self.table
            .range(..=generations)
            .next_back()
            .or_else(|| self.table.iter().next())
            .map(|(_, row)| row.get(bin))
            .expect("validated: the table is not empty")
    }
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
            p.table[&8].get(3).strategy,
            StrategyKind::parse("beam_search:2").unwrap()
        );
        assert_eq!(
            p.choose(100, None, 0).strategy,
            StrategyKind::SelfConsistency
        );
        assert!(p.models().is_empty());
        let back: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(back["table"]["8"][0], "self_consistency");
        assert_eq!(serde_json::from_value::<Policy>(back).unwrap(), p);
        for bad in [
            r#"["mcts", "best_of_n", "best_of_n", "best_of_n", "best_of_n"]"#,
            r#"["compute_optimal", "best_of_n", "best_of_n", "best_of_n", "best_of_n"]"#,
            r#"["best_of_n"]"#,
            r#"[{"model": "m", "strategy": "best_of_n", "generations": 0},
                "best_of_n", "best_of_n", "best_of_n", "best_of_n"]"#,
            r#"[{"model": "", "strategy": "best_of_n"},
                "best_of_n", "best_of_n", "best_of_n", "best_of_n"]"#,
        ] {
            let json = format!(
                r#"{{"probes": 4, "bin_edges": [0.2, 0.4, 0.6, 0.8], "table": {{"8": {bad}}}}}"#
            );
            assert!(serde_json::from_str::<Policy>(&json).is_err(), "{bad}");
        }
        assert_eq!(
            Policy::builtin().choose(16, None, 4).strategy,
            StrategyKind::parse("beam_search:4").unwrap()
        );
    }

    #[test]
    fn a_ladder_policy_names_models_and_reads_flops_rows_under_a_flops_limit() {
        let json = r#"{"probes": 4, "probe_model": "xs", "bin_edges": [0.2, 0.4, 0.6, 0.8],
            "table": {"4": ["majority", "majority", "majority", "majority",
                            {"model": "l", "strategy": "best_of_n"}]},
            "flops_table": [
              {"max_flops": 1e6, "row": ["majority", "majority", "majority", "majority", "majority"]},
              {"max_flops": 1e8, "row": [{"model": "s", "strategy": "majority", "generations": 2},
                 "majority", "majority", "majority", {"model": "l", "strategy": "beam_search:2", "generations": 8}]}
            ]}"#;
        let p: Policy = serde_json::from_str(json).unwrap();
        p.validate().unwrap();
        assert_eq!(p.models(), BTreeSet::from(["xs", "s", "l"]));
        // Generations: the FLOPs table is not read without a FLOPs limit.
        assert_eq!(p.choose(4, None, 4).model.as_deref(), Some("l"));
        // Below the first FLOPs row: the first row.
        assert_eq!(
            p.choose(4, Some(10.0), 4),
            &Choice::strategy(StrategyKind::SelfConsistency)
        );
        let c = p.choose(4, Some(5e8), 4);
        assert_eq!((c.model.as_deref(), c.generations), (Some("l"), Some(8)));
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back["flops_table"][1]["row"][0]["generations"], 2);
        assert_eq!(back["flops_table"][1]["row"][1], "self_consistency");
        assert!(back["flops_table"][0].get("probe").is_none());
        assert_eq!(serde_json::from_value::<Policy>(back).unwrap(), p);

        assert!(p.flops_table.iter().all(|r| r.probe));
        let mut unprobed = p.clone();
        unprobed.flops_table[0].probe = false;
        let back = serde_json::to_value(&unprobed).unwrap();
        assert_eq!(back["flops_table"][0]["probe"], false);
        assert_eq!(serde_json::from_value::<Policy>(back).unwrap(), unprobed);

        let mut bad = p.clone();
        bad.flops_table.reverse();
        assert!(bad.validate().is_err());
    }
}
