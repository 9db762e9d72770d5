//! The strategy and budget mix: which strategy, at which budget, each request asks for.
//!
//! `--mix compute_optimal:16=0.7,beam_search:4:64=0.3` reads as entries
//! `STRATEGY:BUDGET[@FLOPS][=WEIGHT]`: the last `:N` is always the budget (in
//! generations), what comes before it is a strategy as `ponder solve --strategy` takes it
//! (with its optional parameter, so `beam_search:4:64` is beam width 4 at budget 64),
//! `@FLOPS` adds a FLOPs limit (`compute_optimal:64@2e9`, the request's
//! `budget.max_flops`), and the weight defaults to 1. `default` leaves the strategy to the server. Strategy names are checked
//! here, with the strategy library's own parser, so a typo fails before any load is sent.

use ponder_proto::v1 as pb;
use ponder_search::StrategyKind;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Most entries a mix may have (a guard against a pasted list, not a real limit).
const MAX_ENTRIES: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixEntry {
    /// The strategy spec sent by name; `None` is the server's default.
    pub strategy: Option<String>,
    /// Most generations per query.
    pub budget: u32,
    /// Most FLOPs per query (0: no limit).
    #[serde(default)]
    pub max_flops: f64,
    /// The budget's floor (`budget.min_generations`; 0: the server's, 1).
    #[serde(default)]
    pub min_generations: u32,
    /// `fixed` or `adaptive` (`SolveRequest.budget_mode`); None: the server's default.
    #[serde(default)]
    pub budget_mode: Option<String>,
    pub weight: f64,
}

impl MixEntry {
    /// `strategy:budget[@flops]`, the label used in records and reports.
    pub fn label(&self) -> String {
        let flops = if self.max_flops > 0.0 {
            format!("@{:e}", self.max_flops)
        } else {
            String::new()
        };
        let floor = if self.min_generations > 0 {
            format!("/min{}", self.min_generations)
        } else {
            String::new()
        };
        let mode = self
            .budget_mode
            .as_deref()
            .map(|m| format!("/{m}"))
            .unwrap_or_default();
        format!(
            "{}:{}{flops}{floor}{mode}",
            self.strategy.as_deref().unwrap_or("default"),
            self.budget
        )
    }

    /// The request's `budget_mode` (unspecified: the server's default).
    pub fn budget_mode_message(&self) -> pb::BudgetMode {
        ponder_cluster::wire::budget_mode_to_pb(
            self.budget_mode
                .as_deref()
                .and_then(|m| ponder_search::BudgetMode::parse(m).ok()),
        )
    }

    pub fn strategy_message(&self) -> Option<pb::Strategy> {
        self.strategy.as_ref().map(|s| pb::Strategy {
            kind: Some(pb::strategy::Kind::Name(s.clone())),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    entries: Vec<MixEntry>,
    total: f64,
}

impl Mix {
    pub fn parse(text: &str) -> anyhow::Result<Mix> {
        let entries = text
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(parse_entry)
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            !entries.is_empty(),
            "--mix is empty; give entries like compute_optimal:16=0.7,beam_search:64=0.3"
        );
        anyhow::ensure!(
            entries.len() <= MAX_ENTRIES,
            "--mix has {} entries; at most {MAX_ENTRIES}",
            entries.len()
        );
        let total = entries.iter().map(|e| e.weight).sum::<f64>();
        anyhow::ensure!(total > 0.0, "--mix weights must not all be zero");
        Ok(Mix { entries, total })
    }

    pub fn entries(&self) -> &[MixEntry] {
        &self.entries
    }

    /// The index of an entry drawn with probability proportional to its weight.
    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        let mut r = rng.random::<f64>() * self.total;
        let mut chosen = 0;
        for (i, e) in self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.weight > 0.0)
        {
            chosen = i; // the last positive weight absorbs rounding
            if r < e.weight {
                break;
            }
            r -= e.weight;
        }
        chosen
    }

    /// The mix as it would be written on the command line, with normalised weights.
    pub fn label(&self) -> String {
        self.entries
            .iter()
            .map(|e| format!("{}={:.3}", e.label(), e.weight / self.total))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn parse_entry(entry: &str) -> anyhow::Result<MixEntry> {
    let shape = "each --mix entry is STRATEGY:BUDGET[@FLOPS][/minN][/fixed|/adaptive][=WEIGHT], e.g. compute_optimal:16=0.7";
    let (spec, weight) = match entry.rsplit_once('=') {
        Some((s, w)) => {
            let w: f64 = w.trim().parse().map_err(|_| {
                anyhow::anyhow!("--mix {entry:?}: the weight {w:?} is not a number")
            })?;
            anyhow::ensure!(
                w.is_finite() && w >= 0.0,
                "--mix {entry:?}: the weight must be a non-negative number"
            );
            (s.trim(), w)
        }
        None => (entry, 1.0),
    };
    // Budget modifiers after the budget: `/minN` (the floor), `/fixed`, `/adaptive`.
    let mut parts = spec.split('/');
    let spec = parts.next().unwrap_or_default();
    let (mut min_generations, mut budget_mode) = (0u32, None);
    for m in parts.map(str::trim) {
        match m {
            _ if ponder_search::BudgetMode::parse(m).is_ok() => budget_mode = Some(m.to_string()),
            _ => {
                min_generations = m
                    .strip_prefix("min")
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=4096).contains(n))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--mix {entry:?}: {m:?} is not a budget modifier (minN with N in 1..=4096, fixed, adaptive); {shape}"
                        )
                    })?;
            }
        }
    }
    let (spec, max_flops) = match spec.rsplit_once('@') {
        Some((s, f)) => {
            let f: f64 = f.trim().parse().map_err(|_| {
                anyhow::anyhow!("--mix {entry:?}: the FLOPs limit {f:?} is not a number")
            })?;
            anyhow::ensure!(
                f.is_finite() && f > 0.0 && f <= ponder_search::budget::MAX_FLOPS,
                "--mix {entry:?}: the FLOPs limit must be positive and at most {:e}",
                ponder_search::budget::MAX_FLOPS
            );
            (s, f)
        }
        None => (spec, 0.0),
    };
    let (strategy, budget) = spec
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--mix {entry:?}: no budget; {shape}"))?;
    let budget: u32 = budget
        .trim()
        .parse()
        .ok()
        .filter(|b| (1..=4096).contains(b))
        .ok_or_else(|| {
            anyhow::anyhow!("--mix {entry:?}: the budget must be 1..=4096 generations; {shape}")
        })?;
    let strategy = match strategy.trim() {
        "default" => None,
        s => Some(
            StrategyKind::parse(s)
                .map_err(|e| anyhow::anyhow!("--mix {entry:?}: {e}"))?
                .spec(),
        ),
    };
    anyhow::ensure!(
        min_generations <= budget,
        "--mix {entry:?}: the floor /min{min_generations} is above the budget {budget}"
    );
    Ok(MixEntry {
        strategy,
        budget,
        max_flops,
        min_generations,
        budget_mode,
        weight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn budget_modifiers_set_the_floor_and_the_mode() {
        let m = Mix::parse("default:64/min4/adaptive=0.5,compute_optimal:16/fixed").unwrap();
        let e = m.entries();
        assert_eq!((e[0].budget, e[0].min_generations), (64, 4));
        assert_eq!(e[0].budget_mode.as_deref(), Some("adaptive"));
        assert_eq!(e[0].budget_mode_message(), pb::BudgetMode::Adaptive);
        assert_eq!(e[0].label(), "default:64/min4/adaptive");
        assert_eq!(e[1].budget_mode_message(), pb::BudgetMode::Fixed);
        assert_eq!(e[1].min_generations, 0);
        for bad in [
            "default:4/min8",
            "default:4/max2",
            "default:4/min0",
            "default:4/slow",
        ] {
            assert!(Mix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_strategies_with_parameters_budgets_and_weights() {
        let m = Mix::parse("compute_optimal:16=0.7, beam_search:8:64=0.3,default:4").unwrap();
        let e = m.entries();
        assert_eq!(e[0].strategy.as_deref(), Some("compute_optimal"));
        assert_eq!((e[0].budget, e[0].weight), (16, 0.7));
        assert_eq!(e[1].strategy.as_deref(), Some("beam_search:8"));
        assert_eq!((e[1].budget, e[1].weight), (64, 0.3));
        assert_eq!(e[2].strategy, None);
        assert_eq!((e[2].budget, e[2].weight), (4, 1.0));
        assert_eq!(e[1].label(), "beam_search:8:64");
        assert_eq!(e[0].max_flops, 0.0);
    }

    #[test]
    fn an_entry_may_carry_a_flops_limit() {
        let m = Mix::parse("compute_optimal:64@2e9=0.5,beam_search:4:16@1.5e8").unwrap();
        let e = m.entries();
        assert_eq!((e[0].budget, e[0].max_flops, e[0].weight), (64, 2e9, 0.5));
        assert_eq!(e[1].strategy.as_deref(), Some("beam_search:4"));
        assert_eq!((e[1].budget, e[1].max_flops), (16, 1.5e8));
        assert_eq!(e[0].label(), "compute_optimal:64@2e9");
        for bad in [
            "best_of_n:4@x",
            "best_of_n:4@-1",
            "best_of_n:4@1e30",
            "best_of_n@1e9",
        ] {
            assert!(Mix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn picks_in_proportion_to_the_weights() {
        let m = Mix::parse("best_of_n:4=3,self_consistency:4=1,dvts:4=0").unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[m.pick(&mut rng)] += 1;
        }
        assert_eq!(counts[2], 0, "a zero weight is never picked");
        let share = counts[0] as f64 / 10_000.0;
        assert!((share - 0.75).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn bad_entries_say_what_to_write() {
        for (text, needle) in [
            ("compute_optimal", "no budget"),
            ("beam_serch:16", "unknown strategy"),
            ("best_of_n:0", "1..=4096"),
            ("best_of_n:16=x", "not a number"),
            ("best_of_n:16=0", "not all be zero"),
            ("", "empty"),
        ] {
            let e = Mix::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
