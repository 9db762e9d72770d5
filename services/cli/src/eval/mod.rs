//! `ponder eval`: strategies x budgets on a held-out question set, in-process on the
//! bundled models with the same strategy code as the cluster; then the compute-optimal
//! policy fit, its cross-validated evaluation, and the plots. The questions come from
//! the independent evaluation sampler (`ponder_arith::eval_sampler`): uniform trees and
//! operands over the whole grammar, in the slice of question space that the trainer
//! never sees, so the figures measure the grammar learned, not the training sampler.
//!
//! Sampling strategies (self-consistency, best-of-N, weighted best-of-N, `adaptive:8`)
//! are replayed from one scored draw of `max(budgets)` samples per question, which is
//! exactly what running each at each budget would give (see `ponder_search::replay`)
//! at a fraction of the compute. Every other strategy runs for real at each of its
//! budgets. Outputs under `--out`: `draws.jsonl` (every sample's answer and PRM
//! score), `records.jsonl` (one line per question x strategy x budget),
//! `summary.json`, and with `--fit` also `policy.json`, `fit.json` and the plots.
//! With `--addr` the same questions go to a running cluster instead ([`remote`]).

pub mod draws;
pub mod exchange;
pub mod exchange_render;
pub mod fit;
pub mod ladder;
pub mod ladder_fit;
pub mod ladder_run;
pub mod plot;
pub mod records;
pub mod remote;

pub use records::{print_table, summarize, Cell, Record};

use draws::Draw;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use ponder_engine::{ModelWorker, WorkerConfig};
use ponder_search::replay::replayable;
use ponder_search::strategy::compute_optimal::Policy;
use ponder_search::{solve, Budget, SolutionFormat, SolveParams, StrategyKind};
use ponder_worker::local::{LocalGenerator, LocalVerifier};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// Questions solved at once (the model workers batch them).
const CONCURRENCY: usize = 16;

pub struct EvalConfig {
    pub models: PathBuf,
    /// The manifest's verifier to use, by name (None: the default one).
    pub verifier: Option<String>,
    pub per_level: usize,
    pub seed: u64,
    pub budgets: Vec<u32>,
    /// Budgets for the strategies that are run rather than replayed (None: `budgets`).
    pub run_budgets: Option<Vec<u32>>,
    pub strategies: Vec<String>,
    pub out: PathBuf,
    /// Fit the compute-optimal policy, evaluate it with 2-fold cross-validation and
    /// draw the plots.
    pub fit: bool,
}

/// A bundled model loaded, warmed up and running in a worker of its own, with the KV
/// cache its manifest entry asks for, as a node serves it.
pub(crate) fn open_worker(path: &Path) -> anyhow::Result<ModelWorker> {
    let m = ponder_engine::load(path, &ponder_worker::manifest::serving_options(path))?;
    m.warm_up()?;
    Ok(ModelWorker::spawn(m, WorkerConfig::default()))
}

/// `n` scored samples of every question on `generator`, drawn as a best-of-N query
/// draws them (question `i` seeded with `i`), written to `path` one line per question
/// as they finish, in order, and returned.
async fn draw_set(
    generator: &LocalGenerator,
    verifier: &LocalVerifier,
    format: &SolutionFormat,
    problems: &[ponder_arith::task::Problem],
    n: u32,
    what: &str,
    path: &Path,
) -> anyhow::Result<Vec<Draw>> {
    let mut file = std::fs::File::create(path)?;
    let bar = progress_bar(problems.len(), what)?;
    let mut results = futures::stream::iter(problems.iter().enumerate())
        .map(|(i, p)| async move {
            let params = SolveParams::new(p.question.clone(), Budget::new(n, 0, None)?, i as u64);
            let start = Instant::now();
            let (samples, usage) =
                ponder_search::draw(generator, verifier, format, &params, n).await?;
            Ok::<Draw, anyhow::Error>(Draw::new(p, &samples, usage, start.elapsed().as_secs_f64()))
        })
        .buffered(CONCURRENCY.div_ceil(4));
    let mut draws = Vec::with_capacity(problems.len());
    while let Some(d) = results.next().await {
        let d = d?;
        writeln!(file, "{}", serde_json::to_string(&d)?)?;
        bar.inc(1);
        draws.push(d);
    }
    bar.finish_and_clear();
    Ok(draws)
}

fn progress_bar(len: usize, what: &str) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(ProgressStyle::with_template(&format!(
        "{what} {{bar:40}} {{pos}}/{{len}} [{{elapsed}} / ~{{eta}}]"
    ))?);
    Ok(bar)
}

// Boxed for the reason `ponder_cluster::BoxedFuture` gives; not `Send` (rustc cannot
// prove it for the closures inside), which `block_on` and the tests do not need.
pub fn run(cfg: EvalConfig) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<Cell>>>>> {
    Box::pin(async move {
        let strategies: Vec<StrategyKind> = cfg
            .strategies
            .iter()
            .map(|s| StrategyKind::parse(s))
            .collect::<Result<_, _>>()?;
        let run_budgets = cfg
            .run_budgets
            .clone()
            .unwrap_or_else(|| cfg.budgets.clone());
        anyhow::ensure!(
            !cfg.budgets.is_empty() && cfg.budgets.iter().chain(&run_budgets).all(|&b| b >= 1),
            "--budgets must be positive"
        );
        let bundled = crate::models::bundled(Some(&cfg.models), cfg.verifier.as_deref())?;
        let generator = LocalGenerator::new(open_worker(&bundled.generator)?);
        let verifier_path = bundled.verifier.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: ponder eval needs a verifier model",
                cfg.models.display()
            )
        })?;
        let verifier = LocalVerifier::new(open_worker(verifier_path)?)?;
        let policy = match &bundled.policy {
            Some(p) => Some(Arc::new(Policy::from_file(p)?)),
            None => None,
        };
        let format = SolutionFormat::default();
        let problems = ponder_arith::eval_sampler::eval_set(cfg.seed, cfg.per_level);
        std::fs::create_dir_all(&cfg.out)?;

        // 1. One scored draw per question for the replayable strategies.
        let replayed: Vec<StrategyKind> = strategies
            .iter()
            .copied()
            .filter(|&s| replayable(s))
            .collect();
        let mut draws = Vec::new();
        if !replayed.is_empty() || cfg.fit {
            let n = *cfg.budgets.iter().max().expect("checked non-empty");
            let path = cfg.out.join("draws.jsonl");
            draws = draw_set(&generator, &verifier, &format, &problems, n, "draw", &path).await?;
        }

        // 2. The other strategies, run at each of their budgets.
        let mut jobs: Vec<(usize, StrategyKind, u32)> = Vec::new();
        for s in strategies.iter().filter(|s| !replayable(**s)) {
            for &b in &run_budgets {
                jobs.extend((0..problems.len()).map(|i| (i, *s, b)));
            }
        }
        let mut records: Vec<Record> = Vec::new();
        if !jobs.is_empty() {
            let mut file = std::fs::File::create(cfg.out.join("runs.jsonl"))?;
            let bar = progress_bar(jobs.len(), "run ")?;
            let mut results = futures::stream::iter(jobs)
                .map(|(i, strategy, budget)| {
                    let (generator, verifier, format, policy) =
                        (&generator, &verifier, &format, policy.clone());
                    let p = &problems[i];
                    async move {
                        let mut params = SolveParams::new(
                            p.question.clone(),
                            Budget::new(budget, 0, None)?,
                            i as u64,
                        );
                        params.strategy = Some(strategy);
                        params.policy = policy;
                        let start = Instant::now();
                        let o = solve(generator, Some(verifier), format, params, None).await?;
                        let answer = o.answer.unwrap_or_default();
                        Ok::<Record, anyhow::Error>(Record {
                            index: i,
                            question: p.question.clone(),
                            level: p.level,
                            truth: p.answer.to_string(),
                            correct: answer == p.answer.to_string(),
                            answer,
                            strategy: strategy.spec(),
                            chosen: o.strategy.spec(),
                            difficulty_bin: o
                                .decision
                                .filter(|d| d.probed)
                                .map_or(0, |d| d.bin as u32 + 1),
                            budget,
                            generations: o.usage.generations,
                            generator_tokens: o.usage.generator_tokens,
                            verifier_tokens: o.usage.verifier_tokens,
                            flops: o.usage.flops,
                            latency_s: start.elapsed().as_secs_f64(),
                            replayed: false,
                            model: String::new(),
                        })
                    }
                })
                .buffered(CONCURRENCY);
            while let Some(r) = results.next().await {
                let r = r?;
                writeln!(file, "{}", serde_json::to_string(&r)?)?;
                bar.inc(1);
                records.push(r);
            }
            bar.finish_and_clear();
        }
        let specs: Vec<String> = replayed.iter().map(|s| s.spec()).collect();
        analyze(&cfg.out, &draws, records, &specs, &cfg.budgets, cfg.fit)
    })
}

/// Re-analyses a finished evaluation's `draws.jsonl` and `runs.jsonl` (no models
/// needed): the replayed records, the policy fit and the plots.
pub fn reanalyze(out: &Path, replayed: &[String], budgets: &[u32]) -> anyhow::Result<Vec<Cell>> {
    let draws: Vec<Draw> = draws::read_jsonl(&out.join("draws.jsonl"))?;
    let runs_path = out.join("runs.jsonl");
    let runs: Vec<Record> = if runs_path.is_file() {
        draws::read_jsonl(&runs_path)?
    } else {
        Vec::new()
    };
    analyze(out, &draws, runs, replayed, budgets, true)
}

fn analyze(
    out: &Path,
    draws: &[Draw],
    mut records: Vec<Record>,
    replayed: &[String],
    budgets: &[u32],
    fit: bool,
) -> anyhow::Result<Vec<Cell>> {
    for spec in replayed {
        let strategy = StrategyKind::parse(spec)?;
        for &b in budgets {
            for (i, d) in draws.iter().enumerate() {
                records.push(d.replay(i, strategy, b)?);
            }
        }
    }
    if fit {
        let report = fit::fit_and_cross_validate(draws, &records, budgets)?;
        records.extend(report.cv_records.iter().cloned());
        std::fs::write(
            out.join("policy.json"),
            serde_json::to_string_pretty(&report.policy)?,
        )?;
        std::fs::write(
            out.join("fit.json"),
            serde_json::to_string_pretty(&report.summary)?,
        )?;
        plot::draw_all(out, &records, draws, &report)?;
    }
    let mut file = std::fs::File::create(out.join("records.jsonl"))?;
    for r in &records {
        writeln!(file, "{}", serde_json::to_string(r)?)?;
    }
    let cells = summarize(&records);
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&cells)?,
    )?;
    Ok(cells)
}
