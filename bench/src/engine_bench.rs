//! `engine-bench`: prefill and decode throughput of the engine on a GGUF model,
//! with llama.cpp's single-stream decode on the same file measured in the same
//! run, printed as ratios. A command, not a test:
//!
//!     cargo run --release -p ponder-bench --bin engine-bench -- \
//!         --model SmolLM2-135M-Instruct.Q4_1.gguf --python .venv-bench/bin/python

use anyhow::Context;
use clap::Parser;
use ponder_engine::kv::KvCache;
use ponder_engine::model::Segment;
use ponder_engine::{
    load, GenerateRequest, LoadOptions, ModelWorker, SamplingParams, WorkerConfig,
};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "PONDER_SMOLLM2_GGUF")]
    model: PathBuf,
    /// Python with llama-cpp-python for the baseline; skipped when absent.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Tokens decoded per sequence.
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    #[arg(long, default_value = "1,4,16,64")]
    samples: String,
    /// Only decode `N` samples of one prompt (N = 1: greedy) and print the rate; skips
    /// prefill, the other figures and llama.cpp. For instruction counts under callgrind.
    #[arg(long, value_name = "N")]
    decode_only: Option<u32>,
    /// Stop strings for --decode-only (repeatable). One that never matches measures what
    /// checking for stop strings costs per token, as step-level search always sets them.
    #[arg(long)]
    stop: Vec<String>,
}

const PROMPT: &str = "<|im_start|>user\nWrite a short story about a lighthouse keeper who finds a message in a bottle.<|im_end|>\n<|im_start|>assistant\n";

async fn decode_rate(
    worker: &ModelWorker,
    n: u32,
    tokens: usize,
    temperature: f32,
    stop: &[String],
) -> anyhow::Result<f64> {
    let params = SamplingParams {
        temperature,
        max_tokens: tokens,
        ignore_eos: true,
        seed: 1,
        stop: stop.to_vec(),
        ..Default::default()
    };
    let best = {
        let mut best = 0f64;
        for _ in 0..2 {
            let t = Instant::now();
            let resp = worker
                .generate(GenerateRequest {
                    prompt: PROMPT.into(),
                    n,
                    params: params.clone(),
                })
                .await?;
            let generated: u32 = resp.completions.iter().map(|c| c.tokens).sum();
            best = best.max(generated as f64 / t.elapsed().as_secs_f64());
        }
        best
    };
    Ok(best)
}

/// 16 prompts of different lengths decoded together (packed varlen batch) versus one by one.
async fn unequal_lengths(worker: &ModelWorker) -> anyhow::Result<()> {
    let prompts: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "{}Summary {i}:",
                "Lighthouses guide ships at night. ".repeat(1 + 4 * i)
            )
        })
        .collect();
    let params = SamplingParams {
        max_tokens: 32,
        ignore_eos: true,
        ..Default::default()
    };
    let request = |p: &String| GenerateRequest {
        prompt: p.clone(),
        n: 1,
        params: params.clone(),
    };
    let t = Instant::now();
    let mut tokens = 0u32;
    for p in &prompts {
        tokens += worker.generate(request(p)).await?.completions[0].tokens;
    }
    let sequential = tokens as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let handles: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (w, r) = (worker.clone(), request(p));
            tokio::spawn(async move { w.generate(r).await })
        })
        .collect();
    let mut tokens = 0u32;
    for h in handles {
        tokens += h.await??.completions[0].tokens;
    }
    let together = tokens as f64 / t.elapsed().as_secs_f64();
    println!(
        "16 prompts of unequal length (8..~550 tokens), 32 new tokens each: {together:.1} tok/s together vs {sequential:.1} one by one ({:.2}x)",
        together / sequential
    );
    Ok(())
}

/// Time to the first token for a prompt that extends a recent one, with and without the prefix cache.
async fn prefix_reuse(worker: &ModelWorker, model: &std::path::Path) -> anyhow::Result<()> {
    let base = format!(
        "{PROMPT}{}",
        "Once upon a time, a keeper climbed the stairs. ".repeat(30)
    );
    let next = format!("{base}The next morning");
    let ttft = |w: ModelWorker, prompt: String| async move {
        let params = SamplingParams {
            max_tokens: 1,
            ..Default::default()
        };
        let t = Instant::now();
        let r = w
            .generate(GenerateRequest {
                prompt,
                n: 1,
                params,
            })
            .await?;
        anyhow::Ok((t.elapsed(), r.cached_prompt_tokens, r.prompt_tokens))
    };
    ttft(worker.clone(), base.clone()).await?;
    let (hit, cached, total) = ttft(worker.clone(), next.clone()).await?;
    let cold_worker = {
        let loaded = load(model, &LoadOptions::default())?;
        ModelWorker::spawn(
            loaded,
            WorkerConfig {
                prefix_cache_entries: 0,
                ..Default::default()
            },
        )
    };
    ttft(cold_worker.clone(), base).await?;
    let (miss, _, _) = ttft(cold_worker, next).await?;
    let stats = worker.stats().await?;
    println!(
        "prefix cache: {cached} of {total} prompt tokens reused; first token in {hit:.2?} vs {miss:.2?} without ({:.1}x); worker totals: {} hits, {} tokens saved",
        miss.as_secs_f64() / hit.as_secs_f64(),
        stats.prefix_cache.hits,
        stats.prefix_cache.saved_tokens
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    ponder_engine::engine::cli_runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let loaded = load(&args.model, &LoadOptions::default()).context("loading the model")?;
    loaded.warm_up()?;
    println!(
        "model: {} ({}, {} parameters)",
        loaded.info.id, loaded.info.format, loaded.info.parameters
    );

    if let Some(n) = args.decode_only {
        let worker = ModelWorker::spawn(loaded, WorkerConfig::default());
        let temperature = if n == 1 { 0.0 } else { 0.8 };
        let rate = decode_rate(&worker, n, args.tokens, temperature, &args.stop).await?;
        println!("decode, n = {n}: {rate:.1} tok/s aggregate");
        return Ok(());
    }

    // Prefill: one forward pass over a ~512-token prompt, no cache.
    let long: String = PROMPT.repeat(16);
    let ids = loaded.codec.encode(&long, true)?;
    let mut best = 0f64;
    for _ in 0..3 {
        let mut cache = KvCache::new(loaded.model.config.num_layers);
        let t = Instant::now();
        let h = loaded.model.forward(&mut [Segment {
            tokens: &ids,
            cache: &mut cache,
        }])?;
        loaded.model.logits(&h.narrow(0, ids.len() - 1, 1)?)?;
        best = best.max(ids.len() as f64 / t.elapsed().as_secs_f64());
    }
    let prefill = best;
    println!("prefill ({} tokens): {prefill:.0} tok/s", ids.len());

    let worker = ModelWorker::spawn(loaded, WorkerConfig::default());
    let single = decode_rate(&worker, 1, args.tokens, 0.0, &[]).await?;
    println!("decode, single stream (greedy): {single:.1} tok/s");
    for n in args.samples.split(',').map(|s| s.trim().parse::<u32>()) {
        let n = n.context("--samples is a comma-separated list of integers")?;
        let rate = decode_rate(&worker, n, args.tokens, 0.8, &[]).await?;
        println!("decode, n = {n:>2} samples of one prompt: {rate:>7.1} tok/s aggregate ({:.2}x single stream)", rate / single);
    }

    unequal_lengths(&worker).await?;
    prefix_reuse(&worker, &args.model).await?;

    if let Some(python) = args.python {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/llama_cpp_decode.py");
        let out = std::process::Command::new(&python)
            .args([script, "--model"])
            .arg(&args.model)
            .args(["--prompt", PROMPT, "--tokens", &args.tokens.to_string()])
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "llama.cpp baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let lc_decode = v["decode_tok_s"].as_f64().unwrap_or(f64::NAN);
        let lc_prefill = v["prefill_tok_s"].as_f64().unwrap_or(f64::NAN);
        println!("llama.cpp (llama-cpp-python) single stream: {lc_decode:.1} tok/s decode, {lc_prefill:.0} tok/s prefill");
        println!(
            "ratio single-stream decode ponder/llama.cpp: {:.2}x",
            single / lc_decode
        );
    }
    Ok(())
}
