//! Fitting the ladder policy ([`super::ladder`]'s options and costs) and measuring it
//! with 2-fold cross-validation: per predicted bin and FLOPs (or generations) budget,
//! the most accurate option that fits, and whether probing pays at all.

use super::fit::{quintile_edges, PROBES};
use super::ladder::{Ladder, Option_, Outcome};
use ponder_search::replay::replayable;
use ponder_search::strategy::compute_optimal::{Choice, FlopsRow, Policy, Row, BINS};
use ponder_search::strategy::curves::AccuracyPoint;
use ponder_search::strategy::policy::SCHEMA_WITH_ACCURACY;
use ponder_search::StrategyKind;
use std::collections::BTreeMap;

/// Mean accuracy and cost of routing `questions` to one option.
#[derive(Debug, Clone, Copy, Default)]
struct Mean {
    correct: usize,
    flops: f64,
}

/// Fits the ladder policy on `subset`: quintile bins of the probe means; for every FLOPs
/// budget of `flops_grid` and bin, the most accurate routable option whose mean routed
/// cost there is within the budget (ties: cheaper; none fits: the cheapest); for every
/// generations budget, the same within the cost of that many scored samples of the
/// cheapest model and within that many generations.
pub fn fit(
    ladder: &Ladder,
    options: &[Option_],
    subset: &[usize],
    budgets: &[u32],
    flops_grid: &[f64],
) -> anyhow::Result<Policy> {
    let routable = ladder.routable(options);
    let bin_edges = quintile_edges(subset.iter().map(|&q| ladder.probe_mean(q)).collect());
    let mut policy = Policy {
        probes: PROBES,
        probe_model: Some(ladder.rungs[0].model.clone()),
        bin_edges,
        table: BTreeMap::new(),
        flops_table: Vec::new(),
        fitted_by: String::new(),
        // The accuracy of each generations-table choice on its bin's fitting questions
        // (in-sample), for load-adaptive budgets.
        schema: SCHEMA_WITH_ACCURACY,
        accuracy: Vec::new(),
    };
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); BINS];
    for &q in subset {
        members[policy.bin(ladder.probe_mean(q))].push(q);
    }
    // Per bin and option: questions right and total routed FLOPs.
    let mut means: Vec<Vec<Mean>> = Vec::with_capacity(BINS);
    for qs in &members {
        let mut row = Vec::with_capacity(routable.len());
        for o in &routable {
            let mut m = Mean::default();
            for &q in qs {
                let r = ladder.routed(o, q)?;
                m.correct += usize::from(r.correct);
                m.flops += r.flops();
            }
            row.push(m);
        }
        means.push(row);
    }
    // The most accurate option in `bin` within the limits, how many it gets right, and
    // whether it fits (else it is the bin's cheapest).
    let pick = |bin: usize, max_flops: f64, max_generations: u32| -> (Choice, usize, bool) {
        let n = members[bin].len().max(1) as f64;
        let generations = |o: &Option_| ladder.routed_generations(o);
        let mut best: Option<(usize, f64, usize)> = None;
        let mut cheapest: Option<(f64, usize)> = None;
        for (i, o) in routable.iter().enumerate() {
            if generations(o) > max_generations {
                continue;
            }
            let m = means[bin][i];
            let cost = m.flops / n;
            if cheapest.is_none_or(|(c, _)| cost < c) {
                cheapest = Some((cost, i));
            }
            if cost <= max_flops
                && best.is_none_or(|(c, k, _)| m.correct > c || (m.correct == c && cost < k))
            {
                best = Some((m.correct, cost, i));
            }
        }
        let i = best.map(|b| b.2).or(cheapest.map(|c| c.1)).unwrap_or(0);
        let o = &routable[i];
        let choice = Choice {
            model: Some(ladder.rungs[o.rung].model.clone()),
            strategy: o.strategy,
            generations: Some(generations(o)),
        };
        (choice, means[bin][i].correct, best.is_some())
    };
    // Without probes: per option, questions right and mean FLOPs over the subset.
    let mut alone: Vec<(usize, f64)> = Vec::with_capacity(options.len());
    for o in options {
        let (mut correct, mut flops) = (0, 0.0);
        for &q in subset {
            let r = ladder.outcome(o, q)?;
            correct += usize::from(r.correct);
            flops += r.flops();
        }
        alone.push((correct, flops / subset.len().max(1) as f64));
    }
    for &b in budgets {
        let default = Option_ {
            rung: 0,
            strategy: StrategyKind::WeightedBestOfN,
            n: b.max(PROBES),
        };
        let mut row = Vec::with_capacity(BINS);
        for (bin, qs) in members.iter().enumerate() {
            let cap = if qs.is_empty() {
                f64::INFINITY
            } else {
                let mut total = 0.0;
                for &q in qs {
                    total += ladder.routed(&default, q)?.flops();
                }
                total / qs.len() as f64
            };
            let (choice, correct, _) = pick(bin, cap, b.max(PROBES));
            policy.accuracy.push(AccuracyPoint::measured(
                choice.model.clone(),
                bin as u8 + 1,
                b,
                correct as u32,
                qs.len() as u32,
            ));
            row.push(choice);
        }
        policy.table.insert(b, Row::new(row)?);
    }
    for &f in flops_grid {
        let picks: Vec<(Choice, usize, bool)> =
            (0..BINS).map(|bin| pick(bin, f, u32::MAX)).collect();
        let probed_fits = picks.iter().all(|p| p.2);
        let probed_correct: usize = picks.iter().map(|p| p.1).sum();
        let row: Vec<Choice> = picks.into_iter().map(|p| p.0).collect();
        // Probing pays only if knowing the bin beats, by more than fitting noise
        // (`margin` questions), the best single option the same budget buys for every
        // question; otherwise no probes, the simpler plan. Below every probed plan's
        // cost, the cheapest single option.
        let margin = (subset.len() / 100).max(2);
        let single = alone
            .iter()
            .enumerate()
            .filter(|(_, a)| a.1 <= f)
            .max_by(|x, y| x.1 .0.cmp(&y.1 .0).then(y.1 .1.total_cmp(&x.1 .1)))
            .or_else(|| {
                alone
                    .iter()
                    .enumerate()
                    .min_by(|x, y| x.1 .1.total_cmp(&y.1 .1))
            });
        let row = match single {
            Some((i, a)) if !probed_fits || a.0 + margin > probed_correct => {
                let o = &options[i];
                let c = Choice {
                    model: Some(ladder.rungs[o.rung].model.clone()),
                    strategy: o.strategy,
                    generations: Some(o.n),
                };
                FlopsRow {
                    max_flops: f,
                    probe: false,
                    row: Row::new(vec![c; BINS])?,
                }
            }
            _ => FlopsRow {
                max_flops: f,
                probe: true,
                row: Row::new(row)?,
            },
        };
        policy.flops_table.push(row);
    }
    policy.validate()?;
    Ok(policy)
}

/// The option a policy's choice names (its model on the ladder; its generations net of
/// the probes off the cheapest model).
pub fn option_of(ladder: &Ladder, c: &Choice, probed: bool) -> anyhow::Result<Option_> {
    let model = c.model.as_deref().unwrap_or(&ladder.rungs[0].model);
    let rung = ladder
        .rungs
        .iter()
        .position(|r| r.model == model)
        .ok_or_else(|| anyhow::anyhow!("the policy names {model}, which is not on the ladder"))?;
    let total = c.generations.unwrap_or(PROBES);
    let n = if !probed || (rung == 0 && replayable(c.strategy)) {
        total
    } else {
        total.saturating_sub(PROBES).max(1)
    };
    Ok(Option_ {
        rung,
        strategy: c.strategy,
        n,
    })
}

/// 2-fold cross-validated compute-optimal: per question, what a policy fitted on the
/// other half routes it to and what that earned and cost. `budget` picks the row:
/// `Err(generations)` or `Ok(FLOPs)`.
pub fn cross_validate(
    ladder: &Ladder,
    options: &[Option_],
    budgets: &[u32],
    flops_grid: &[f64],
) -> anyhow::Result<CvResult> {
    let halves: [Vec<usize>; 2] = [
        (0..ladder.questions).filter(|q| q % 2 == 0).collect(),
        (0..ladder.questions).filter(|q| q % 2 == 1).collect(),
    ];
    let fits = [
        fit(ladder, options, &halves[1], budgets, flops_grid)?,
        fit(ladder, options, &halves[0], budgets, flops_grid)?,
    ];
    let mut by_flops = vec![vec![Outcome::default(); ladder.questions]; flops_grid.len()];
    let mut by_generations = vec![vec![Outcome::default(); ladder.questions]; budgets.len()];
    let mut chosen_rung = vec![vec![0usize; ladder.questions]; flops_grid.len()];
    let mut probed_at = vec![vec![false; ladder.questions]; flops_grid.len()];
    for (h, half) in halves.iter().enumerate() {
        let p = &fits[h];
        for &q in half {
            let bin = p.bin(ladder.probe_mean(q));
            for (k, &f) in flops_grid.iter().enumerate() {
                let probed = p.flops_row(Some(f)).is_none_or(|r| r.probe);
                let o = option_of(ladder, p.choose(u32::MAX, Some(f), bin), probed)?;
                chosen_rung[k][q] = o.rung;
                probed_at[k][q] = probed;
                by_flops[k][q] = if probed {
                    ladder.routed(&o, q)?
                } else {
                    ladder.outcome(&o, q)?
                };
            }
            for (k, &b) in budgets.iter().enumerate() {
                let o = option_of(ladder, p.choose(b, None, bin), true)?;
                by_generations[k][q] = ladder.routed(&o, q)?;
            }
        }
    }
    Ok(CvResult {
        by_flops,
        by_generations,
        chosen_rung,
        probed: probed_at,
    })
}

/// Per question outcomes of cross-validated compute-optimal.
pub struct CvResult {
    /// [flops_grid index][question]
    pub by_flops: Vec<Vec<Outcome>>,
    /// [budgets index][question]
    pub by_generations: Vec<Vec<Outcome>>,
    /// The rung each FLOPs row sent each question to.
    pub chosen_rung: Vec<Vec<usize>>,
    /// Whether each FLOPs row probed each question.
    pub probed: Vec<Vec<bool>>,
}

/// A log-spaced grid of `points` FLOPs budgets spanning the options' mean costs.
pub fn flops_grid(ladder: &Ladder, options: &[Option_], points: usize) -> anyhow::Result<Vec<f64>> {
    let mut lo = f64::INFINITY;
    let mut hi: f64 = 0.0;
    for o in options {
        let mut total = 0.0;
        let mut alone = 0.0;
        for q in 0..ladder.questions {
            total += ladder.routed(o, q)?.flops();
            alone += ladder.outcome(o, q)?.flops();
        }
        let n = ladder.questions.max(1) as f64;
        lo = lo.min(alone / n);
        hi = hi.max(total / n);
    }
    anyhow::ensure!(lo.is_finite() && hi > 0.0, "no option has a cost");
    let (a, b) = (lo.max(1.0).log10(), hi.log10());
    Ok((0..points)
        .map(|i| {
            let x = a + (b - a) * i as f64 / (points.max(2) - 1) as f64;
            // Two significant digits: a policy file a person can read.
            let p = 10f64.powf(x.floor() - 1.0);
            (10f64.powf(x) / p).round() * p
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::draws::{Draw, Sample};
    use crate::eval::ladder::{Greedy, Rung};

    /// A draw of `answers` (score 0.9 when right, 0.1 when wrong) that cost 10
    /// generator FLOPs and 100 verifier FLOPs per sample (verifier of 1 parameter:
    /// 50 tokens a sample).
    fn draw(q: usize, level: u8, answers: &[&str]) -> Draw {
        let n = answers.len();
        Draw {
            question: format!("q{q}"),
            level,
            truth: "1".into(),
            samples: answers
                .iter()
                .map(|a| Sample {
                    answer: Some(a.to_string()),
                    score: if *a == "1" { 0.9 } else { 0.1 },
                })
                .collect(),
            generator_tokens: 0,
            verifier_tokens: 50 * n as u64,
            flops: 110.0 * n as f64,
            latency_s: n as f64,
        }
    }

    fn greedy(model: &str, q: usize, correct: bool) -> Greedy {
        Greedy {
            model: model.into(),
            index: q,
            question: format!("q{q}"),
            answer: String::new(),
            correct,
            tokens: 1,
            flops: 1.0,
            latency_s: 0.0,
            cpu_s: 0.0,
        }
    }

    /// Ten questions, the first five easy: the small model is right exactly on the easy
    /// ones, the big one (10x the cost: 1000 generator FLOPs a sample, a greedy answer
    /// included) exactly on the hard ones. So each alone gets half, and only knowing the
    /// difficulty (probing) gets all ten.
    fn ladder() -> Ladder {
        let small: Vec<Draw> = (0..10)
            .map(|q| draw(q, 1, &[if q < 5 { "1" } else { "2" }; 8]))
            .collect();
        let mut big: Vec<Draw> = (0..10)
            .map(|q| draw(q, 1, &[if q < 5 { "2" } else { "1" }; 8]))
            .collect();
        for d in &mut big {
            d.flops = 1000.0 * 8.0 + 100.0 * 8.0;
        }
        let rung = |model: &str, parameters, draws: Vec<Draw>, hard: bool, flops| Rung {
            model: model.into(),
            parameters,
            training_flops: 1.0,
            greedy: (0..10)
                .map(|q| {
                    let mut g = greedy(model, q, (q >= 5) == hard);
                    g.flops = flops;
                    g
                })
                .collect(),
            draws,
            runs: vec![],
        };
        Ladder::new(
            vec![
                rung("small", 1, small, false, 10.0),
                rung("big", 100, big, true, 1000.0),
            ],
            1,
        )
        .unwrap()
    }

    #[test]
    fn routed_costs_count_the_probes_once_and_majority_pays_for_scoring_them() {
        let l = ladder();
        let wbon = |rung, n| Option_ {
            rung,
            strategy: StrategyKind::WeightedBestOfN,
            n,
        };
        let majority = |rung, n| Option_ {
            rung,
            strategy: StrategyKind::SelfConsistency,
            n,
        };
        // Probes: 4 small samples, 40 generator + 400 verifier FLOPs.
        let p = l.probes(0);
        assert_eq!(
            (p.generator_flops, p.verifier_flops, p.generations),
            (40.0, 400.0, 4)
        );
        // On the probe model they are the option's first samples.
        let r = l.routed(&wbon(0, 8), 0).unwrap();
        assert_eq!(
            (r.generator_flops, r.verifier_flops, r.generations),
            (80.0, 800.0, 8)
        );
        // Majority scores nothing itself, but its probes were scored.
        let r = l.routed(&majority(0, 8), 0).unwrap();
        assert_eq!((r.generator_flops, r.verifier_flops), (80.0, 400.0));
        assert_eq!(l.outcome(&majority(0, 8), 0).unwrap().verifier_flops, 0.0);
        // On the big model the probes come on top: 2 x 1000 + 40, 2 x 100 + 400.
        let r = l.routed(&wbon(1, 2), 7).unwrap();
        assert_eq!(
            (r.generator_flops, r.verifier_flops, r.generations),
            (2040.0, 600.0, 6)
        );
        assert!(r.correct);
    }

    #[test]
    fn the_fit_probes_only_where_knowing_the_difficulty_pays() {
        let l = ladder();
        let options = l.options(&[1, 4, 8], &[StrategyKind::WeightedBestOfN]);
        // Weighted best-of-N at 1, 4 and 8, and greedy, on each model.
        assert_eq!(options.len(), 8);
        let all: Vec<usize> = (0..10).collect();
        let f = fit(&l, &options, &all, &[8], &[1000.0, 3000.0]).unwrap();
        let p = &f;
        assert_eq!(p.probe_model.as_deref(), Some("small"));
        // Easy questions (probe mean 0.9) are bin 1, hard (0.1) bin 5.
        let (easy, hard) = (p.bin(0.9), p.bin(0.1));
        assert!(easy < hard);
        // 1000 FLOPs: probes (440) plus the big model (1000 at least) do not fit, so
        // probing gains nothing over the best single option: the small model's greedy
        // answer (5 right, 10 FLOPs), no probes.
        let row = p.flops_row(Some(1000.0)).unwrap();
        assert!(!row.probe);
        let c = p.choose(u32::MAX, Some(1000.0), hard);
        assert_eq!(
            (c.model.as_deref(), c.strategy),
            (Some("small"), StrategyKind::Greedy)
        );
        // 3000: probing fits and gets all ten; hard questions go to the big model's
        // greedy answer (1440 with the probes, as right as its samples and cheaper).
        assert!(p.flops_row(Some(3000.0)).unwrap().probe);
        let c = p.choose(u32::MAX, Some(3000.0), hard);
        assert_eq!(
            (c.model.as_deref(), c.strategy, c.generations),
            (Some("big"), StrategyKind::Greedy, Some(5))
        );
        assert_eq!(
            p.choose(u32::MAX, Some(3000.0), easy).model.as_deref(),
            Some("small")
        );
        // Budget 8 generations = what 8 scored small samples cost (880): small.
        assert_eq!(p.choose(8, None, hard).model.as_deref(), Some("small"));
        // Cross-validated: at 1000 each half's best single option is the model right
        // on more of *its* questions (odd half: 3 hard, so big; even: 3 easy, so small),
        // which is right on 2 of the other half's 5 each; at 3000 both halves probe.
        let cv = cross_validate(&l, &options, &[8], &[1000.0, 3000.0]).unwrap();
        let acc = |outs: &[Outcome]| outs.iter().filter(|o| o.correct).count();
        assert_eq!((acc(&cv.by_flops[0]), acc(&cv.by_flops[1])), (4, 10));
        assert!(cv.probed[0].iter().all(|p| !p) && cv.probed[1].iter().all(|p| *p));
    }
}
