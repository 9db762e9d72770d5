//! `ponder eval`: run strategies over a held-out question set at several budgets on the
//! in-process engine (the same strategy code as the cluster) and record, per question,
//! correctness and the compute used; print and write the accuracy table.
//!
//! Records go to `<out>/records.jsonl` (one line per question x strategy x budget) and
//! the table to `<out>/summary.json`. Fitting the compute-optimal policy and the plots
//! build on these records.

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use ponder_engine::{LoadOptions, ModelWorker, WorkerConfig};
use ponder_search::local::{LocalGenerator, LocalVerifier};
use ponder_search::{solve, Budget, SolutionFormat, SolveParams, StrategyKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Questions solved at once (the model workers batch them).
const CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub question: String,
    pub level: u8,
    pub truth: String,
    pub answer: String,
    pub correct: bool,
    pub strategy: String,
    pub chosen: String,
    pub difficulty_bin: u32,
    pub budget: u32,
    pub generations: u32,
    pub generator_tokens: u64,
    pub verifier_tokens: u64,
    pub flops: f64,
    pub latency_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub strategy: String,
    pub budget: u32,
    pub questions: usize,
    pub accuracy: f64,
    pub accuracy_by_level: BTreeMap<u8, f64>,
    pub mean_generations: f64,
    pub mean_tokens: f64,
    pub mean_latency_s: f64,
}

pub struct EvalConfig {
    pub models: PathBuf,
    pub per_level: usize,
    pub seed: u64,
    pub budgets: Vec<u32>,
    pub strategies: Vec<String>,
    pub out: PathBuf,
}

pub async fn run(cfg: EvalConfig) -> anyhow::Result<Vec<Cell>> {
    let strategies: Vec<StrategyKind> = cfg
        .strategies
        .iter()
        .map(|s| StrategyKind::parse(s))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(
        !cfg.budgets.is_empty() && cfg.budgets.iter().all(|&b| b >= 1),
        "--budgets must be positive"
    );
    let open = |name: &str| -> anyhow::Result<ModelWorker> {
        let m = ponder_engine::load(&cfg.models.join(name), &LoadOptions::default())?;
        m.warm_up()?;
        Ok(ModelWorker::spawn(m, WorkerConfig::default()))
    };
    let generator = LocalGenerator::new(open(crate::models::GENERATOR_DIR)?);
    let verifier = LocalVerifier::new(open(crate::models::VERIFIER_DIR)?)?;
    let policy_path = cfg.models.join(crate::models::POLICY_FILE);
    let policy = if policy_path.is_file() {
        Some(std::sync::Arc::new(
            ponder_search::strategy::compute_optimal::Policy::from_file(&policy_path)?,
        ))
    } else {
        None
    };
    let format = SolutionFormat::default();
    let problems = ponder_arith::task::held_out_set(cfg.seed, cfg.per_level);
    std::fs::create_dir_all(&cfg.out)?;
    let mut records_file = std::fs::File::create(cfg.out.join("records.jsonl"))?;
    let mut jobs: Vec<(usize, StrategyKind, u32)> = Vec::new();
    for s in &strategies {
        for &b in &cfg.budgets {
            jobs.extend((0..problems.len()).map(|i| (i, *s, b)));
        }
    }
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} {msg} [{elapsed} / ~{eta}]",
    )?);
    let mut records = Vec::with_capacity(jobs.len());
    let mut results = futures::stream::iter(jobs)
        .map(|(i, strategy, budget)| {
            let (generator, verifier, format, policy) =
                (&generator, &verifier, &format, policy.clone());
            let p = &problems[i];
            async move {
                let mut params =
                    SolveParams::new(p.question.clone(), Budget::new(budget, 0, None)?, i as u64);
                params.strategy = Some(strategy);
                params.policy = policy;
                let start = Instant::now();
                let o = solve(generator, Some(verifier), format, params, None).await?;
                let answer = o.answer.unwrap_or_default();
                Ok::<Record, anyhow::Error>(Record {
                    question: p.question.clone(),
                    level: p.level,
                    truth: p.answer.to_string(),
                    correct: answer == p.answer.to_string(),
                    answer,
                    strategy: strategy.spec(),
                    chosen: o.strategy.spec(),
                    difficulty_bin: o.decision.map_or(0, |d| d.bin as u32 + 1),
                    budget,
                    generations: o.usage.generations,
                    generator_tokens: o.usage.generator_tokens,
                    verifier_tokens: o.usage.verifier_tokens,
                    flops: o.usage.flops,
                    latency_s: start.elapsed().as_secs_f64(),
                })
            }
        })
        .buffered(CONCURRENCY);
    while let Some(r) = results.next().await {
        let r = r?;
        writeln!(records_file, "{}", serde_json::to_string(&r)?)?;
        bar.inc(1);
        records.push(r);
    }
    bar.finish_and_clear();
    let cells = summarize(&records);
    std::fs::write(
        cfg.out.join("summary.json"),
        serde_json::to_string_pretty(&cells)?,
    )?;
    Ok(cells)
}

/// Accuracy and mean compute per (strategy, budget).
pub fn summarize(records: &[Record]) -> Vec<Cell> {
    let mut groups: BTreeMap<(String, u32), Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.strategy.clone(), r.budget))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|((strategy, budget), rs)| {
            let n = rs.len() as f64;
            let mut by_level: BTreeMap<u8, (usize, usize)> = BTreeMap::new();
            for r in &rs {
                let e = by_level.entry(r.level).or_default();
                e.0 += r.correct as usize;
                e.1 += 1;
            }
            Cell {
                strategy,
                budget,
                questions: rs.len(),
                accuracy: rs.iter().filter(|r| r.correct).count() as f64 / n,
                accuracy_by_level: by_level
                    .into_iter()
                    .map(|(l, (c, t))| (l, c as f64 / t as f64))
                    .collect(),
                mean_generations: rs.iter().map(|r| r.generations as f64).sum::<f64>() / n,
                mean_tokens: rs
                    .iter()
                    .map(|r| (r.generator_tokens + r.verifier_tokens) as f64)
                    .sum::<f64>()
                    / n,
                mean_latency_s: rs.iter().map(|r| r.latency_s).sum::<f64>() / n,
            }
        })
        .collect()
}

/// Prints the accuracy table: one row per strategy, one column per budget.
pub fn print_table(cells: &[Cell], out: &Path) {
    let mut budgets: Vec<u32> = cells.iter().map(|c| c.budget).collect();
    budgets.sort();
    budgets.dedup();
    print!("{:<22}", "strategy \\ budget");
    for b in &budgets {
        print!("{b:>14}");
    }
    println!();
    let mut names: Vec<&str> = cells.iter().map(|c| c.strategy.as_str()).collect();
    names.dedup();
    for name in names {
        print!("{name:<22}");
        for b in &budgets {
            match cells.iter().find(|c| c.strategy == name && c.budget == *b) {
                Some(c) => print!("{:>7.1}% ({:>4.1})", 100.0 * c.accuracy, c.mean_generations),
                None => print!("{:>14}", "-"),
            }
        }
        println!();
    }
    println!(
        "accuracy (mean generations used); records and summary in {}",
        out.display()
    );
}
