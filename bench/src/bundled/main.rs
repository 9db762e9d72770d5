//! `bundled-bench`: the engine's throughput on the bundled ponder-arith models, on the
//! calls test-time search makes (many samples of one prompt, PRM scoring of candidate
//! batches, step continuations sharing a prefix), each also as a fraction of the
//! machine's measured arithmetic peak (MFU), with llama.cpp batched on the same
//! generator (converted to GGUF) in the same run. A command, not a test:
//!
//!     cargo run --release -p ponder-bench --bin bundled-bench -- \
//!         --generator models/arith-gen-l --prm models/arith-prm --python .venv-bench/bin/python
//!
//! FLOPs are counted as `Usage.flops` counts them: 2 × parameters per token (attention
//! score FLOPs excluded, as in the paper's accounting). Each figure is the median of
//! `--runs` runs.

mod llama;
mod peak;
mod workloads;

use anyhow::Context;
use clap::Parser;
use ponder_cluster::metrics::resident_bytes;
use ponder_engine::{load, KvDtype, LoadOptions, ModelWorker, Quantize, WorkerConfig};
use ponder_proto::v1::verifier_client::VerifierClient;
use std::path::{Path, PathBuf};
use std::time::Instant;
use workloads::Work;

#[derive(Parser)]
struct Args {
    /// A generator model directory (repeatable: each rung of the ladder).
    #[arg(long, default_value = "models/arith-gen-l")]
    generator: Vec<PathBuf>,
    /// The PRM model directory.
    #[arg(long, default_value = "models/arith-prm")]
    prm: PathBuf,
    /// The generator whose samples are scored and continued (the manifest's default
    /// generator, whose candidates the cluster's verifier sees; a larger rung gives few
    /// distinct solutions, see `workloads::candidates`).
    #[arg(long, default_value = "models/arith-gen-xs")]
    candidates_from: PathBuf,
    /// Samples per request for the sampling figure.
    #[arg(long, default_value = "1,8,16,64", value_delimiter = ',')]
    samples: Vec<u32>,
    /// Candidates per scoring request.
    #[arg(long, default_value = "8,16,64", value_delimiter = ',')]
    batches: Vec<usize>,
    /// Questions per level (levels 1..=6) from the independent evaluation sampler.
    #[arg(long, default_value_t = 1)]
    per_level: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Runs per figure; the median is printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Model-worker threads (0 = the worker's default for the model's size).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Weight quantization at load (none, q8_0 or bf16), for generator and verifier alike.
    #[arg(long, default_value = "none")]
    quantize: Quantize,
    /// How the KV cache stores keys and values (f32 or f16), for generator and verifier
    /// alike.
    #[arg(long, default_value = "f32")]
    kv_cache_dtype: KvDtype,
    /// Whether samples in the same state share one row (`WorkerConfig::share_twins`;
    /// false measures what it saves).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    share_twins: bool,
    /// Which parts to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "peak,samples,steps,score,llama"
    )]
    only: Vec<Part>,
    /// Python with llama-cpp-python and gguf for the llama.cpp baseline; skipped when absent.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Tokens per sequence in the llama.cpp comparison (fixed length, EOS ignored on both sides).
    #[arg(long, default_value_t = 128)]
    llama_tokens: usize,
    /// Score through a running verifier node at HOST:PORT (its gRPC `Score`) instead of an
    /// in-process worker, so that another build of the node serving `--prm` compares on
    /// the same requests. A node keeps what it scored, so every run after its first reads
    /// its caches: start a fresh node per run and batch size (`--runs 1 --batches B`).
    #[arg(long)]
    score_addr: Option<String>,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Part {
    Peak,
    Samples,
    Steps,
    Score,
    Llama,
}

fn main() -> anyhow::Result<()> {
    ponder_engine::engine::cli_runtime()?.block_on(run(Args::parse()))
}

async fn median_of(
    runs: usize,
    mut f: impl AsyncFnMut() -> anyhow::Result<Work>,
) -> anyhow::Result<Work> {
    let mut all = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        all.push(f().await?);
    }
    all.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    Ok(all[all.len() / 2])
}

/// "12.3 GFLOP/s, 4.5% of f32 peak" for `tokens_per_s` through a model of `params`.
fn mfu(tokens_per_s: f64, params: u64, peak: Option<&peak::Peak>) -> String {
    let flops = tokens_per_s * 2.0 * params as f64;
    match peak {
        Some(p) => format!(
            "{:.2} GFLOP/s, MFU {:.1}% of f32 peak",
            flops / 1e9,
            100.0 * flops / p.f32_flops
        ),
        None => format!("{:.2} GFLOP/s", flops / 1e9),
    }
}

/// How every model of the run is loaded and served.
#[derive(Clone, Copy)]
struct Serving {
    threads: usize,
    quantize: Quantize,
    kv_cache: KvDtype,
    share_twins: bool,
}

fn spawn(path: &Path, serving: Serving) -> anyhow::Result<ModelWorker> {
    let Serving {
        threads,
        quantize,
        kv_cache,
        share_twins,
    } = serving;
    let opts = LoadOptions {
        quantize,
        kv_cache,
        ..LoadOptions::default()
    };
    // What an operator sizes a node by: load plus warm-up time, and the memory it adds.
    let (started, rss_before) = (Instant::now(), resident_bytes().unwrap_or(0));
    let loaded = load(path, &opts).with_context(|| format!("loading {}", path.display()))?;
    loaded.warm_up()?;
    println!(
        "\n{}: loaded and warmed up in {:.0} ms, resident memory +{:.1} MiB",
        path.display(),
        started.elapsed().as_secs_f64() * 1e3,
        resident_bytes().unwrap_or(0).saturating_sub(rss_before) as f64 / (1 << 20) as f64
    );
    let config = WorkerConfig {
        threads,
        share_twins,
        ..Default::default()
    };
    Ok(ModelWorker::spawn(loaded, config))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let has = |p: Part| args.only.contains(&p);
    let serving = Serving {
        threads: args.threads,
        quantize: args.quantize,
        kv_cache: args.kv_cache_dtype,
        share_twins: args.share_twins,
    };
    let questions = ponder_arith::eval_sampler::eval_set(args.seed, args.per_level);
    println!(
        "workload: {} questions from the independent evaluation sampler (seed {}), median of {} runs",
        questions.len(),
        args.seed,
        args.runs
    );
    let peak = if has(Part::Peak) {
        let p = peak::measure()?;
        println!(
            "peak on {} threads: f32 matmul 1024^3 {:.1} GFLOP/s; int8 dot loop {:.1} GOP/s ({})",
            p.threads,
            p.f32_flops / 1e9,
            p.int8_ops / 1e9,
            p.int8_kernel
        );
        Some(p)
    } else {
        None
    };

    let cands = if has(Part::Steps) || has(Part::Score) {
        let max_batch = args.batches.iter().copied().max().unwrap_or(8) as u32;
        let worker = spawn(&args.candidates_from, serving)?;
        let cands = workloads::candidates(&worker, &questions, max_batch.max(4)).await?;
        println!(
            "candidates: {} distinct solutions from {} (T = 1.0)",
            cands.iter().map(Vec::len).sum::<usize>(),
            worker.info().id
        );
        cands
    } else {
        Vec::new()
    };
    for path in &args.generator {
        let worker = spawn(path, serving)?;
        let (params, threads) = (worker.info().parameters, worker.threads());
        println!(
            "generator {} ({params} parameters, {}, {threads} worker thread(s))",
            worker.info().id,
            worker.info().format
        );
        if has(Part::Samples) {
            for &n in &args.samples {
                let w = median_of(args.runs, async || {
                    workloads::samples(&worker, &questions, n).await
                })
                .await?;
                let computed = w.computed.unwrap_or(w.tokens);
                println!(
                    "  samples n = {n:>2}: {:>7.0} generated tok/s ({} tokens in {:.2} s, {computed} of them from rows of their own; {})",
                    w.rate(),
                    w.tokens,
                    w.seconds,
                    mfu(computed as f64 / w.seconds, params, peak.as_ref())
                );
            }
        }
        if has(Part::Steps) {
            let mut cache = workloads::CacheUse::default();
            let w = median_of(args.runs, async || {
                let (w, c) = workloads::step_rounds(&worker, &questions, &cands, 4, 4).await?;
                cache = c;
                Ok(w)
            })
            .await?;
            println!(
                    "  step continuations (beam width 4 x 4 expansions, shared prefixes): {:>7.0} generated tok/s ({} tokens in {:.2} s; {} of {} prompt tokens from the prefix cache; {})",
                    w.rate(),
                    w.tokens,
                    w.seconds,
                    cache.cached_tokens,
                    cache.prompt_tokens,
                    mfu(w.rate(), params, peak.as_ref())
                );
        }
        if has(Part::Llama) {
            if let Some(python) = &args.python {
                llama::compare(
                    &worker,
                    path,
                    python,
                    &args.samples,
                    args.llama_tokens,
                    args.runs,
                )
                .await?;
            }
        }
    }

    if has(Part::Score) {
        // A second copy of the PRM counts the tokens of each scored sequence.
        let counter = load(&args.prm, &LoadOptions::default())?;
        let prm = counter
            .prm
            .as_ref()
            .context("--prm names a model without a PRM convention (prm.json)")?;
        let worker = spawn(&args.prm, serving)?;
        let (params, threads) = (worker.info().parameters, worker.threads());
        println!(
            "verifier {} ({params} parameters, {}, {threads} worker thread(s))",
            worker.info().id,
            worker.info().format
        );
        drop(worker);
        if let Some(addr) = &args.score_addr {
            let mut client = VerifierClient::connect(format!("http://{addr}"))
                .await
                .with_context(|| format!("no verifier node at {addr}"))?;
            for &batch in &args.batches {
                let w = median_of(args.runs, async || {
                    workloads::scoring_remote(&mut client, &questions, &cands, batch, |q, steps| {
                        Ok(prm.encode(&counter.codec, q, steps)?.0.len() as u64)
                    })
                    .await
                })
                .await?;
                println!(
                    "  score batch {batch:>2} through {addr}: {:>7.0} scored tok/s ({:.0} candidates/s; {} tokens in {:.2} s; {})",
                    w.rate(),
                    (batch * questions.len()) as f64 / w.seconds,
                    w.tokens,
                    w.seconds,
                    mfu(w.rate(), params, peak.as_ref())
                );
            }
            return Ok(());
        }
        for &batch in &args.batches {
            let w = median_of(args.runs, async || {
                // A cold worker per run: the verifier keeps what it scored, so scoring
                // the same candidates again would read them from its cache.
                let worker = spawn(&args.prm, serving)?;
                workloads::scoring(&worker, &questions, &cands, batch, |q, steps| {
                    Ok(prm.encode(&counter.codec, q, steps)?.0.len() as u64)
                })
                .await
            })
            .await?;
            let distinct: usize = cands
                .iter()
                .map(|c| {
                    workloads::picked(c, batch)
                        .collect::<std::collections::HashSet<_>>()
                        .len()
                })
                .sum();
            let computed = w.computed.unwrap_or(w.tokens);
            println!(
                "  score batch {batch:>2}: {:>7.0} scored tok/s ({:.0} candidates/s, {distinct} of them distinct; {} tokens in {:.2} s, {computed} of them run through the model; {})",
                w.rate(),
                (batch * questions.len()) as f64 / w.seconds,
                w.tokens,
                w.seconds,
                mfu(computed as f64 / w.seconds, params, peak.as_ref())
            );
        }
    }
    Ok(())
}
