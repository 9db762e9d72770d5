//! Fitting the compute-optimal policy (Snell et al. §3.2) and evaluating it honestly.
//!
//! Difficulty is model-predicted: the mean PRM score of compute-optimal's probe
//! samples, cut into quintiles (bin 1 = highest scores = easiest). For each budget and
//! bin the policy picks the evaluated strategy with the best accuracy on the fitting
//! questions (ties: fewer generations, then the order given). Its accuracy is measured
//! with 2-fold cross-validation, as in the paper: the questions are split in two
//! halves (alternating, so every level is split evenly), a policy fitted on one half
//! routes the other, so no question is answered by a policy fitted on it. The shipped
//! policy is fitted on all questions.
//!
//! Routed to a sampling strategy, compute-optimal reuses its probes, so its result is
//! that strategy's replayed record. Routed to a strategy that was run (beam search),
//! it is that run's record plus the probes' cost, which the record's generations
//! include: the table shows what it really spent.

use super::draws::Draw;
use super::Record;
use ponder_search::strategy::compute_optimal::{Policy, Row, BINS};
use ponder_search::strategy::curves::AccuracyPoint;
use ponder_search::strategy::policy::SCHEMA_WITH_ACCURACY;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Probe samples per question.
pub const PROBES: u32 = 4;
/// The strategy name of the cross-validated compute-optimal records.
pub const CV_NAME: &str = "compute_optimal@cv";
pub const BON_WEIGHTED: &str = "weighted_best_of_n";
pub const MAJORITY: &str = "self_consistency";

/// Records by (question index, strategy, budget).
struct Lookup<'a> {
    by_key: HashMap<(usize, &'a str, u32), &'a Record>,
    strategies: Vec<&'a str>,
}

impl<'a> Lookup<'a> {
    fn new(draws: &[Draw], records: &'a [Record]) -> Self {
        let mut by_key = HashMap::new();
        let mut strategies: Vec<&str> = Vec::new();
        for r in records {
            if r.strategy.starts_with("compute_optimal") {
                continue;
            }
            // Records of another question set (by index or text) are ignored.
            if draws.get(r.index).is_some_and(|d| d.question == r.question) {
                by_key.insert((r.index, r.strategy.as_str(), r.budget), r);
                if !strategies.contains(&r.strategy.as_str()) {
                    strategies.push(r.strategy.as_str());
                }
            }
        }
        Self { by_key, strategies }
    }

    fn get(&self, q: usize, strategy: &str, budget: u32) -> Option<&'a Record> {
        self.by_key.get(&(q, strategy, budget)).copied()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BudgetRow {
    pub budget: u32,
    pub accuracy: f64,
    pub mean_generations: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Efficiency {
    /// Weighted best-of-N at the largest budget: the accuracy to match.
    pub target_budget: u32,
    pub target_accuracy: f64,
    /// The smallest budget at which cross-validated compute-optimal matches it.
    pub matched_at_budget: Option<u32>,
    pub matched_mean_generations: Option<f64>,
    /// target_budget / matched_mean_generations.
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BinRow {
    pub bin: usize,
    pub questions: usize,
    pub mean_level: f64,
    /// Strategy -> accuracy per budget (budget order as in `budgets`).
    pub accuracy: BTreeMap<String, Vec<Option<f64>>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FitSummary {
    pub probes: u32,
    pub budgets: Vec<u32>,
    pub fold_policies: Vec<Policy>,
    pub compute_optimal_cv: Vec<BudgetRow>,
    pub efficiency: Option<Efficiency>,
    /// Difficulty bins of the shipped policy (probes at the largest budget).
    pub bins: Vec<BinRow>,
}

pub struct FitReport {
    pub policy: Policy,
    pub summary: FitSummary,
    pub cv_records: Vec<Record>,
}

pub(super) fn quintile_edges(mut values: Vec<f32>) -> [f32; BINS - 1] {
    values.sort_by(f32::total_cmp);
    let at = |k: usize| {
        values
            .get((k * values.len() / BINS).min(values.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    [at(1), at(2), at(3), at(4)]
}

/// Fits a policy on the questions `subset`.
fn fit(subset: &[usize], draws: &[Draw], lookup: &Lookup, budgets: &[u32]) -> Policy {
    let max_budget = budgets.iter().copied().max().unwrap_or(1);
    let bin_edges = quintile_edges(
        subset
            .iter()
            .map(|&q| draws[q].probe_mean(PROBES, max_budget))
            .collect(),
    );
    let mut policy = Policy {
        probes: PROBES,
        probe_model: None,
        bin_edges,
        table: BTreeMap::new(),
        flops_table: Vec::new(),
        fitted_by: String::new(),
        // The accuracy of each choice on its bin's fitting questions (in-sample), for
        // load-adaptive budgets.
        schema: SCHEMA_WITH_ACCURACY,
        accuracy: Vec::new(),
    };
    for &b in budgets {
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); BINS];
        for &q in subset {
            members[policy.bin(draws[q].probe_mean(PROBES, b))].push(q);
        }
        let row: Vec<String> = members
            .iter()
            .map(|qs| best_strategy(qs, lookup, b))
            .collect();
        for (bin, (qs, s)) in members.iter().zip(&row).enumerate() {
            let correct = qs
                .iter()
                .filter(|&&q| lookup.get(q, s, b).is_some_and(|r| r.correct))
                .count();
            policy.accuracy.push(AccuracyPoint::measured(
                None,
                bin as u8 + 1,
                b,
                correct as u32,
                qs.len() as u32,
            ));
        }
        policy
            .table
            .insert(b, Row::parse(&row).expect("one strategy per bin"));
    }
    policy
}

/// The most accurate strategy on `questions` at `budget`; ties go to the cheaper.
/// Strategies that were run (not replayed) are candidates only above the probe count,
/// where compute-optimal has generations left for them after its probes.
fn best_strategy(questions: &[usize], lookup: &Lookup, budget: u32) -> String {
    let mut best: Option<(&str, usize, u64)> = None;
    for &s in &lookup.strategies {
        let recs: Option<Vec<&Record>> = questions
            .iter()
            .map(|&q| lookup.get(q, s, budget))
            .collect();
        let Some(recs) = recs else { continue };
        if recs.iter().any(|r| !r.replayed) && budget <= PROBES {
            continue;
        }
        let correct = recs.iter().filter(|r| r.correct).count();
        let cost: u64 = recs.iter().map(|r| routed_generations(r) as u64).sum();
        if best.is_none_or(|(_, c, k)| correct > c || (correct == c && cost < k)) {
            best = Some((s, correct, cost));
        }
    }
    best.map_or_else(|| BON_WEIGHTED.to_string(), |(s, _, _)| s.to_string())
}

/// Generations compute-optimal spends when routed to `r`'s strategy: a replayed
/// strategy reuses the probes; a run one pays for them on top.
fn routed_generations(r: &Record) -> u32 {
    if r.replayed {
        r.generations
    } else {
        r.generations + PROBES.min(r.budget)
    }
}

/// What compute-optimal with `policy` does on question `q` at `budget`.
fn route(
    policy: &Policy,
    draws: &[Draw],
    lookup: &Lookup,
    q: usize,
    budget: u32,
) -> anyhow::Result<Record> {
    let d = &draws[q];
    let bin = policy.bin(d.probe_mean(policy.probes, budget));
    let chosen = policy.choose(budget, None, bin).strategy.spec();
    let r = lookup
        .get(q, &chosen, budget)
        .or_else(|| lookup.get(q, BON_WEIGHTED, budget))
        .ok_or_else(|| {
            anyhow::anyhow!("no record of {chosen} at budget {budget} for question {q}")
        })?;
    let mut out = r.clone();
    if !r.replayed {
        let share = PROBES.min(budget) as f64 / d.samples.len() as f64;
        out.generator_tokens += (d.generator_tokens as f64 * share) as u64;
        out.verifier_tokens += (d.verifier_tokens as f64 * share) as u64;
        out.flops += d.flops * share;
    }
    out.generations = routed_generations(r);
    out.strategy = CV_NAME.to_string();
    out.chosen = chosen;
    out.difficulty_bin = bin as u32 + 1;
    Ok(out)
}

fn accuracy_of(records: &[&Record]) -> (f64, f64) {
    let n = records.len().max(1) as f64;
    (
        records.iter().filter(|r| r.correct).count() as f64 / n,
        records.iter().map(|r| r.generations as f64).sum::<f64>() / n,
    )
}

pub fn fit_and_cross_validate(
    draws: &[Draw],
    records: &[Record],
    budgets: &[u32],
) -> anyhow::Result<FitReport> {
    anyhow::ensure!(
        draws.len() >= 2 * BINS,
        "fitting needs at least 10 questions"
    );
    let lookup = Lookup::new(draws, records);
    anyhow::ensure!(
        lookup.strategies.contains(&BON_WEIGHTED),
        "fitting needs weighted_best_of_n among the strategies (the fallback)"
    );
    let folds: [Vec<usize>; 2] = [
        (0..draws.len()).step_by(2).collect(),
        (1..draws.len()).step_by(2).collect(),
    ];
    let fold_policies = [
        fit(&folds[0], draws, &lookup, budgets),
        fit(&folds[1], draws, &lookup, budgets),
    ];
    let mut cv_records = Vec::new();
    for &b in budgets {
        for (k, fold) in folds.iter().enumerate() {
            // Questions of fold k are routed by the policy fitted on the other fold.
            let policy = &fold_policies[1 - k];
            for &q in fold {
                cv_records.push(route(policy, draws, &lookup, q, b)?);
            }
        }
    }
    let all: Vec<usize> = (0..draws.len()).collect();
    let mut policy = fit(&all, draws, &lookup, budgets);
    policy.fitted_by = format!(
        "ponder eval --fit: {} held-out questions, strategies {}, budgets {:?}, quintile bins of the mean PRM score of {} probes",
        draws.len(),
        lookup.strategies.join(","),
        budgets,
        PROBES
    );

    let cell = |strategy: &str, b: u32, from: &[Record]| -> Option<(f64, f64)> {
        let rs: Vec<&Record> = from
            .iter()
            .filter(|r| r.strategy == strategy && r.budget == b)
            .collect();
        (!rs.is_empty()).then(|| accuracy_of(&rs))
    };
    let compute_optimal_cv: Vec<BudgetRow> = budgets
        .iter()
        .map(|&b| {
            let (accuracy, mean_generations) = cell(CV_NAME, b, &cv_records).unwrap_or_default();
            BudgetRow {
                budget: b,
                accuracy,
                mean_generations,
            }
        })
        .collect();
    let max_budget = budgets.iter().copied().max().unwrap_or(1);
    let efficiency = cell(BON_WEIGHTED, max_budget, records).map(|(target, _)| {
        let matched = compute_optimal_cv
            .iter()
            .filter(|r| r.accuracy >= target)
            .min_by_key(|r| r.budget);
        Efficiency {
            target_budget: max_budget,
            target_accuracy: target,
            matched_at_budget: matched.map(|r| r.budget),
            matched_mean_generations: matched.map(|r| r.mean_generations),
            ratio: matched.map(|r| max_budget as f64 / r.mean_generations.max(1e-9)),
        }
    });
    let bins = bin_rows(&policy, draws, &lookup, budgets, max_budget);
    Ok(FitReport {
        summary: FitSummary {
            probes: PROBES,
            budgets: budgets.to_vec(),
            fold_policies: fold_policies.to_vec(),
            compute_optimal_cv,
            efficiency,
            bins,
        },
        policy,
        cv_records,
    })
}

/// Accuracy per strategy and budget within each difficulty bin of `policy`.
fn bin_rows(
    policy: &Policy,
    draws: &[Draw],
    lookup: &Lookup,
    budgets: &[u32],
    max_budget: u32,
) -> Vec<BinRow> {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); BINS];
    for (q, d) in draws.iter().enumerate() {
        members[policy.bin(d.probe_mean(policy.probes, max_budget))].push(q);
    }
    members
        .into_iter()
        .enumerate()
        .map(|(bin, qs)| BinRow {
            bin: bin + 1,
            questions: qs.len(),
            mean_level: qs.iter().map(|&q| draws[q].level as f64).sum::<f64>()
                / qs.len().max(1) as f64,
            accuracy: lookup
                .strategies
                .iter()
                .map(|&s| {
                    let per_budget = budgets
                        .iter()
                        .map(|&b| {
                            let rs: Option<Vec<&Record>> =
                                qs.iter().map(|&q| lookup.get(q, s, b)).collect();
                            rs.filter(|rs| !rs.is_empty()).map(|rs| accuracy_of(&rs).0)
                        })
                        .collect();
                    (s.to_string(), per_budget)
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quintiles_cut_evenly() {
        let edges = quintile_edges((0..100).map(|i| i as f32 / 100.0).collect());
        assert_eq!(edges, [0.2, 0.4, 0.6, 0.8]);
        let p = Policy {
            bin_edges: edges,
            ..Policy::default()
        };
        assert_eq!(p.bin(0.95), 0);
        assert_eq!(p.bin(0.1), 4);
    }
}
