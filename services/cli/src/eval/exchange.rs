//! The exchange-rate report (`ponder eval --flops`): accuracy against inference FLOPs
//! per query for every (model, strategy), for cross-validated compute-optimal over the
//! ladder and for the Pareto frontier; per level, how many FLOPs the smallest model
//! with search needs to reach a larger model's greedy or majority accuracy; and where
//! training cost overturns that (Snell et al. §7). Every comparison is paired on the
//! same questions with a bootstrap 95% interval.
//!
//! Outputs under `--out`: `exchange.json`, `exchange.md` (the tables for
//! docs/results.md), `ladder-policy.json`, and the plots `flops_accuracy` and
//! `seconds_accuracy` (PNG and SVG).

use super::ladder::{Ladder, Option_, Outcome};
use super::ladder_fit;
use ponder_search::StrategyKind;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::path::Path;

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 10_000;
/// FLOPs budgets of the compute-optimal curve.
const GRID_POINTS: usize = 12;

/// A point of a curve: accuracy and mean cost over the questions it covers.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub label: String,
    pub accuracy: f64,
    pub flops: f64,
    pub verifier_share: f64,
    pub seconds: f64,
    pub generations: f64,
}

fn point(label: String, outs: &[&Outcome]) -> Point {
    let n = outs.len().max(1) as f64;
    let flops: f64 = outs.iter().map(|o| o.flops()).sum();
    let verifier: f64 = outs.iter().map(|o| o.verifier_flops).sum();
    Point {
        label,
        accuracy: outs.iter().filter(|o| o.correct).count() as f64 / n,
        flops: flops / n,
        verifier_share: if flops > 0.0 { verifier / flops } else { 0.0 },
        seconds: outs.iter().map(|o| o.seconds).sum::<f64>() / n,
        generations: outs.iter().map(|o| f64::from(o.generations)).sum::<f64>() / n,
    }
}

/// The paired bootstrap 95% interval of mean(a) - mean(b) (0/1 per question).
pub fn paired_interval(a: &[bool], b: &[bool], seed: u64) -> Interval {
    let n = a.len();
    let diff: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(u8::from(x)) - f64::from(u8::from(y)))
        .collect();
    let mean = diff.iter().sum::<f64>() / n.max(1) as f64;
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| diff[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |p: f64| means[((RESAMPLES as f64 - 1.0) * p).round() as usize];
    (mean, at(0.025), at(0.975))
}

/// A paired difference in accuracy and its bootstrap 95% interval: (mean, low, high).
pub type Interval = (f64, f64, f64);

/// One model's best option at no more mean FLOPs than compute-optimal spent, and
/// compute-optimal's paired difference from it.
#[derive(Debug, Clone, Serialize)]
pub struct Single {
    pub model: String,
    pub point: Option<Point>,
    pub difference: Option<Interval>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Versus {
    pub budget_flops: f64,
    pub compute_optimal: Point,
    pub best_single: Vec<Single>,
    /// Share of questions compute-optimal sent off the probe model (probes discarded).
    pub moved_share: f64,
    /// Share of questions routed with probes (0: the fitted policies run one choice
    /// without probes at this budget).
    pub probed_share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    /// The smaller model searching.
    pub small_model: String,
    pub level: u8,
    pub baseline: String,
    pub baseline_accuracy: f64,
    pub baseline_flops: f64,
    /// The smaller model's cheapest option reaching the baseline's accuracy.
    pub matched: Option<Point>,
    /// matched FLOPs / baseline FLOPs.
    pub flops_ratio: Option<f64>,
    pub difference: Option<Interval>,
    /// The smaller model's most accurate option.
    pub best: Point,
    /// Once training counts: after this many queries the baseline model's training
    /// plus inference costs less than the smallest model's (None: the smallest model
    /// is cheaper per query too, so search never stops paying).
    pub break_even_queries: Option<f64>,
    /// At the break-even point, the baseline model's inference tokens over its
    /// pretraining tokens (the paper's R = D_inference / D_pretrain).
    pub inference_to_pretraining: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Training {
    pub model: String,
    pub parameters: u64,
    pub training_flops: f64,
    pub training_tokens: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub questions: usize,
    pub models: Vec<Training>,
    pub curves: Vec<(String, Vec<Point>)>,
    pub greedy: Vec<Point>,
    pub frontier: Vec<Point>,
    /// The same over estimated CPU-seconds.
    pub frontier_seconds: Vec<Point>,
    pub compute_optimal: Vec<Point>,
    pub compute_optimal_generations: Vec<Point>,
    pub probes: Point,
    pub versus: Vec<Versus>,
    pub exchange: Vec<Exchange>,
    /// CPU time of one routing decision after the probes (bin + table lookup), mean
    /// over every question at every budget of the fitted policy, in nanoseconds.
    pub routing_ns: f64,
}

fn strategies() -> Vec<StrategyKind> {
    [
        "self_consistency",
        "best_of_n",
        "weighted_best_of_n",
        "adaptive:8",
    ]
    .iter()
    .map(|s| StrategyKind::parse(s).expect("built-in specs parse"))
    .collect()
}

fn name(l: &Ladder, o: &Option_) -> String {
    format!("{} {}", l.rungs[o.rung].model, o.strategy.spec())
}

/// The points no other point beats on both accuracy and `cost`, cheapest first.
fn pareto(points: &[Point], cost: impl Fn(&Point) -> f64) -> Vec<Point> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by(|a, b| cost(a).total_cmp(&cost(b)));
    let mut frontier: Vec<Point> = Vec::new();
    for p in sorted {
        if frontier.last().is_none_or(|f| p.accuracy > f.accuracy) {
            frontier.push(p.clone());
        }
    }
    frontier
}

/// Builds the report, writes its files under `out`, and returns it.
pub fn report(l: &Ladder, budgets: &[u32], out: &Path) -> anyhow::Result<Report> {
    let options = l.options(budgets, &strategies());
    let q_all: Vec<usize> = (0..l.questions).collect();
    let outcomes: Vec<Vec<Outcome>> = options
        .iter()
        .map(|o| q_all.iter().map(|&q| l.outcome(o, q)).collect())
        .collect::<anyhow::Result<_>>()?;
    // Each option's accuracy and mean cost over every question, computed once.
    let option_points: Vec<Point> = options
        .iter()
        .zip(&outcomes)
        .map(|(o, outs)| {
            point(
                format!("{} N={}", name(l, o), o.n),
                &outs.iter().collect::<Vec<_>>(),
            )
        })
        .collect();

    // Curves per (model, strategy) over N.
    let mut curves: Vec<(String, Vec<Point>)> = Vec::new();
    let mut greedy: Vec<Point> = Vec::new();
    for (o, p) in options.iter().zip(&option_points) {
        if o.strategy == StrategyKind::Greedy {
            // One point per model, not a curve.
            greedy.push(Point {
                label: format!("{} greedy", l.rungs[o.rung].model),
                ..p.clone()
            });
            continue;
        }
        let family = name(l, o);
        let p = Point {
            label: format!("N={}", o.n),
            ..p.clone()
        };
        match curves.iter_mut().find(|c| c.0 == family) {
            Some(c) => c.1.push(p),
            None => curves.push((family, vec![p])),
        }
    }
    let all: Vec<Point> = curves
        .iter()
        .flat_map(|(f, ps)| {
            ps.iter().map(move |p| Point {
                label: format!("{f} {}", p.label),
                ..p.clone()
            })
        })
        .chain(greedy.iter().cloned())
        .collect();
    let frontier = pareto(&all, |p| p.flops);
    let frontier_seconds = pareto(&all, |p| p.seconds);

    // Cross-validated compute-optimal.
    let grid = ladder_fit::flops_grid(l, &options, GRID_POINTS)?;
    let cv = ladder_fit::cross_validate(l, &options, budgets, &grid)?;
    let compute_optimal: Vec<Point> = grid
        .iter()
        .zip(&cv.by_flops)
        .map(|(f, outs)| {
            point(
                format!("<= {f:.1e} FLOPs"),
                &outs.iter().collect::<Vec<_>>(),
            )
        })
        .collect();
    let compute_optimal_generations: Vec<Point> = budgets
        .iter()
        .zip(&cv.by_generations)
        .map(|(b, outs)| point(format!("{b} generations"), &outs.iter().collect::<Vec<_>>()))
        .collect();
    let probe_outs: Vec<Outcome> = q_all.iter().map(|&q| l.probes(q)).collect();
    let probes = point("probes".into(), &probe_outs.iter().collect::<Vec<_>>());

    // Compute-optimal against each model's best option at no more FLOPs.
    let mut versus = Vec::new();
    for (k, co) in compute_optimal.iter().enumerate() {
        let co_correct: Vec<bool> = cv.by_flops[k].iter().map(|o| o.correct).collect();
        let mut best_single = Vec::new();
        for (r, rung) in l.rungs.iter().enumerate() {
            let best = options
                .iter()
                .zip(&option_points)
                .enumerate()
                .filter(|(_, (o, p))| o.rung == r && p.flops <= co.flops)
                .fold(None, |best: Option<(usize, f64)>, (i, (_, p))| match best {
                    Some((_, a)) if p.accuracy <= a => best,
                    _ => Some((i, p.accuracy)),
                });
            let (p, correct): (Option<Point>, Option<Vec<bool>>) = match best {
                Some((i, _)) => (
                    Some(option_points[i].clone()),
                    Some(outcomes[i].iter().map(|o| o.correct).collect()),
                ),
                None => (None, None),
            };
            let ci = correct.map(|c| paired_interval(&co_correct, &c, 7 + k as u64));
            best_single.push(Single {
                model: rung.model.clone(),
                point: p,
                difference: ci,
            });
        }
        let moved = cv.chosen_rung[k].iter().filter(|&&r| r != 0).count();
        versus.push(Versus {
            budget_flops: grid[k],
            compute_optimal: co.clone(),
            best_single,
            moved_share: moved as f64 / l.questions.max(1) as f64,
            probed_share: cv.probed[k].iter().filter(|&&p| p).count() as f64
                / l.questions.max(1) as f64,
        });
    }

    // Per level: each smaller model's search against the larger models' baselines.
    let exchange: Vec<Exchange> = (0..l.rungs.len().saturating_sub(1))
        .flat_map(|small| per_level(l, &options, &outcomes, small))
        .collect();

    let models = l
        .rungs
        .iter()
        .map(|r| Training {
            model: r.model.clone(),
            parameters: r.parameters,
            training_flops: r.training_flops,
            training_tokens: r.training_flops / (6.0 * r.parameters.max(1) as f64),
        })
        .collect();
    let mut policy = ladder_fit::fit(l, &options, &q_all, budgets, &grid)?;
    let routing_ns = routing_time(l, &policy, &grid);
    let report = Report {
        routing_ns,
        questions: l.questions,
        models,
        curves,
        greedy,
        frontier,
        frontier_seconds,
        compute_optimal,
        compute_optimal_generations,
        probes,
        versus,
        exchange,
    };
    policy.fitted_by = format!(
        "ponder eval --flops: {} held-out questions, models {}, strategies {}, budgets {:?}; difficulty from {} probes of {}; FLOPs rows by mean measured FLOPs",
        l.questions,
        l.rungs.iter().map(|r| r.model.as_str()).collect::<Vec<_>>().join(","),
        strategies().iter().map(|s| s.spec()).collect::<Vec<_>>().join(","),
        budgets,
        policy.probes,
        l.rungs[0].model,
    );
    std::fs::write(
        out.join("ladder-policy.json"),
        serde_json::to_string_pretty(&policy)?,
    )?;
    std::fs::write(
        out.join("exchange.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(
        out.join("exchange.md"),
        super::exchange_render::markdown(&report),
    )?;
    super::exchange_render::plots(out, &report)?;
    Ok(report)
}

/// Mean CPU time of one routing decision (bin, then the FLOPs row's choice), timed
/// over every question at every FLOPs budget, repeated to reach a measurable total.
fn routing_time(
    l: &Ladder,
    policy: &ponder_search::strategy::compute_optimal::Policy,
    grid: &[f64],
) -> f64 {
    let means: Vec<f32> = (0..l.questions).map(|q| l.probe_mean(q)).collect();
    if means.is_empty() || grid.is_empty() {
        return 0.0;
    }
    let started = std::time::Instant::now();
    let mut decisions = 0u64;
    let mut sink = 0usize;
    while decisions < 100_000 {
        for &m in &means {
            for &f in grid {
                let c = policy.choose(u32::MAX, Some(f), policy.bin(std::hint::black_box(m)));
                sink = sink.wrapping_add(c.generations.unwrap_or(0) as usize);
                decisions += 1;
            }
        }
    }
    std::hint::black_box(sink);
    started.elapsed().as_nanos() as f64 / decisions as f64
}

/// Per level, the cheapest option of rung `small` that reaches each larger rung's
/// greedy and majority@8 accuracy (an oracle choice over that level's questions: the
/// best case for the small model), with the FLOPs ratio, the paired difference, and
/// where training cost overturns it.
fn per_level(
    l: &Ladder,
    options: &[Option_],
    outcomes: &[Vec<Outcome>],
    small: usize,
) -> Vec<Exchange> {
    let mut exchange = Vec::new();
    let q_all: Vec<usize> = (0..l.questions).collect();
    let levels: std::collections::BTreeSet<u8> = q_all.iter().map(|&q| l.level(q)).collect();
    let mine: Vec<usize> = (0..options.len())
        .filter(|&i| options[i].rung == small)
        .collect();
    for &level in &levels {
        let qs: Vec<usize> = q_all
            .iter()
            .copied()
            .filter(|&q| l.level(q) == level)
            .collect();
        // The small model's options on this level's questions, whatever the baseline.
        let points: Vec<(usize, Point)> = mine
            .iter()
            .map(|&i| {
                let outs: Vec<&Outcome> = qs.iter().map(|&q| &outcomes[i][q]).collect();
                let label = format!("{} N={}", name(l, &options[i]), options[i].n);
                (i, point(label, &outs))
            })
            .collect();
        let Some(best) = points
            .iter()
            .map(|(_, p)| p)
            .max_by(|x, y| {
                x.accuracy
                    .total_cmp(&y.accuracy)
                    .then(y.flops.total_cmp(&x.flops))
            })
            .cloned()
        else {
            continue;
        };
        for (r, rung) in l.rungs.iter().enumerate().skip(small + 1) {
            let baseline = |strategy: StrategyKind, n: u32, label: String| {
                options
                    .iter()
                    .position(|o| o.rung == r && o.strategy == strategy && o.n == n)
                    .map(|i| {
                        (
                            label,
                            qs.iter().map(|&q| outcomes[i][q]).collect::<Vec<_>>(),
                        )
                    })
            };
            let baselines = [
                baseline(StrategyKind::Greedy, 1, format!("{} greedy", rung.model)),
                baseline(
                    StrategyKind::SelfConsistency,
                    8,
                    format!("{} majority@8", rung.model),
                ),
            ];
            for (label, base) in baselines.into_iter().flatten() {
                let b = point(label.clone(), &base.iter().collect::<Vec<_>>());
                let reaching = points
                    .iter()
                    .filter(|(_, p)| p.accuracy >= b.accuracy)
                    .min_by(|x, y| x.1.flops.total_cmp(&y.1.flops))
                    .cloned();
                let difference = reaching.as_ref().map(|(i, _)| {
                    let a: Vec<bool> = qs.iter().map(|&q| outcomes[*i][q].correct).collect();
                    let c: Vec<bool> = base.iter().map(|o| o.correct).collect();
                    paired_interval(&a, &c, 1000 + level as u64)
                });
                let (break_even_queries, inference_to_pretraining) = match &reaching {
                    Some((_, m)) if m.flops > b.flops => {
                        let (small_t, big_t) = (l.rungs[small].training_flops, rung.training_flops);
                        let q = ((big_t - small_t) / (m.flops - b.flops)).max(0.0);
                        let tokens_per_query = b.flops / (2.0 * rung.parameters.max(1) as f64);
                        let pretraining = big_t / (6.0 * rung.parameters.max(1) as f64);
                        (Some(q), Some(q * tokens_per_query / pretraining))
                    }
                    _ => (None, None),
                };
                exchange.push(Exchange {
                    small_model: l.rungs[small].model.clone(),
                    break_even_queries,
                    inference_to_pretraining,
                    level,
                    baseline: label,
                    baseline_accuracy: b.accuracy,
                    baseline_flops: b.flops,
                    flops_ratio: reaching.as_ref().map(|(_, p)| p.flops / b.flops),
                    matched: reaching.map(|(_, p)| p),
                    difference,
                    best: best.clone(),
                });
            }
        }
    }
    exchange
}
