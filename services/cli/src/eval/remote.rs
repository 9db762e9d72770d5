//! `ponder eval --addr`: the same held-out questions, strategies and budgets, sent as
//! `Solve` calls to a running cluster through its public API. Users measure their own
//! deployment (their models, policy, format and hardware) with the table they would
//! get in-process.
//!
//! Every strategy runs for real at every budget (there are no per-sample scores to
//! replay from over the API), so the policy is not fitted here: `--fit` needs the
//! in-process draws. Latency is the client's: queueing and the network included.

use super::records::{summarize, Cell, Record};
use crate::client::{connect_with, request};
use futures::StreamExt;
use ponder_cluster::connect::ConnectArgs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct RemoteEval {
    pub addr: String,
    pub connect: ConnectArgs,
    pub per_level: usize,
    pub seed: u64,
    pub budgets: Vec<u32>,
    pub strategies: Vec<String>,
    /// Pin every query to this generator model (`SolveRequest.model_id`).
    pub model: Option<String>,
    /// Queries in flight at once.
    pub concurrency: usize,
    /// Each query's deadline.
    pub timeout: Duration,
    pub out: PathBuf,
}

/// Runs every (question, strategy, budget) against the cluster; writes `records.jsonl`
/// and `summary.json` under `out`.
pub async fn run(cfg: RemoteEval) -> anyhow::Result<Vec<Cell>> {
    anyhow::ensure!(
        (1..=256).contains(&cfg.concurrency),
        "--concurrency must be 1..=256"
    );
    anyhow::ensure!(
        !cfg.budgets.is_empty() && cfg.budgets.iter().all(|&b| b >= 1),
        "--budgets must be positive"
    );
    // By their canonical spec, as the in-process table names them.
    let strategies = cfg
        .strategies
        .iter()
        .map(|s| Ok(ponder_search::StrategyKind::parse(s)?.spec()))
        .collect::<anyhow::Result<Vec<String>>>()?;
    let client = connect_with(&cfg.addr, &cfg.connect).await?;
    let problems = ponder_arith::eval_sampler::eval_set(cfg.seed, cfg.per_level);
    let mut jobs = Vec::new();
    for s in &strategies {
        for &b in &cfg.budgets {
            jobs.extend((0..problems.len()).map(|i| (i, s.clone(), b)));
        }
    }
    std::fs::create_dir_all(&cfg.out)?;
    let bar = super::progress_bar(jobs.len(), "solve")?;
    let mut results = futures::stream::iter(jobs)
        .map(|(i, strategy, budget)| {
            let mut client = client.clone();
            let p = &problems[i];
            let (model, timeout) = (cfg.model.clone(), cfg.timeout);
            async move {
                let mut req = request(&p.question, Some(&strategy), budget, 0, i as u64);
                req.model_id = model.unwrap_or_default();
                let mut req = tonic::Request::new(req);
                req.set_timeout(timeout);
                let start = Instant::now();
                let r = client
                    .solve(req)
                    .await
                    .map_err(|s| {
                        anyhow::anyhow!(
                            "{strategy} at budget {budget} on {:?}: {}: {}",
                            p.question,
                            ponder_cluster::metrics::code_name(s.code()),
                            s.message()
                        )
                    })?
                    .into_inner();
                let usage = r.usage.unwrap_or_default();
                Ok::<Record, anyhow::Error>(Record {
                    index: i,
                    question: p.question.clone(),
                    level: p.level,
                    truth: p.answer.to_string(),
                    correct: r.answer == p.answer.to_string(),
                    answer: r.answer,
                    strategy,
                    chosen: r.strategy,
                    difficulty_bin: r.difficulty_bin,
                    budget,
                    generations: usage.generations,
                    generator_tokens: usage.generator_tokens,
                    verifier_tokens: usage.verifier_tokens,
                    flops: usage.flops,
                    latency_s: start.elapsed().as_secs_f64(),
                    replayed: false,
                    model: r.model_id,
                })
            }
        })
        .buffer_unordered(cfg.concurrency);
    let mut records = Vec::new();
    let mut file = std::fs::File::create(cfg.out.join("records.jsonl"))?;
    while let Some(r) = results.next().await {
        let r = r?;
        writeln!(file, "{}", serde_json::to_string(&r)?)?;
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
