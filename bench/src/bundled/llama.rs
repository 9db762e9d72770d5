//! llama.cpp batched on the same generator, in the same run: `llama_cpp_batched.py`
//! converts the model to GGUF (f32 and Q8_0) and decodes n sequences of one prompt per
//! `llama_batch`; we run the identical workload (fixed length, EOS ignored, T = 0.8, or
//! greedy at n = 1) and print both with the ratio. Our engine runs f32 weights, so the
//! f32 column is the like-for-like one; Q8_0 is shown for what int8 weights could buy.

use anyhow::Context;
use ponder_engine::{load, GenerateRequest, LoadOptions, ModelWorker, SamplingParams};
use ponder_search::format::SolutionFormat;
use std::path::Path;
use std::time::Instant;

const QUESTION: &str = "(47+38)*3-19";

pub async fn compare(
    worker: &ModelWorker,
    model: &Path,
    python: &Path,
    samples: &[u32],
    tokens: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let prompt = SolutionFormat::default().prompt(QUESTION);
    let ids = load(model, &LoadOptions::default())?
        .codec
        .encode(&prompt, true)?;
    let ids_arg: Vec<String> = ids.iter().map(u32::to_string).collect();
    let samples_arg: Vec<String> = samples.iter().map(u32::to_string).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/llama_cpp_batched.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg("--model")
        .arg(model)
        .args(["--prompt-ids", &ids_arg.join(",")])
        .args(["--samples", &samples_arg.join(",")])
        .args(["--tokens", &tokens.to_string(), "--runs", &runs.to_string()])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "llama.cpp batched baseline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("llama_cpp_batched.py printed no JSON")?;

    let ours_greedy = fixed_length(worker, &prompt, 1, 32).await?.1;
    let theirs_greedy: Vec<u64> = v["greedy"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
        .unwrap_or_default();
    let agree = ours_greedy
        .iter()
        .zip(&theirs_greedy)
        .take_while(|(a, b)| u64::from(**a) == **b)
        .count();
    println!(
        "  llama.cpp (llama-cpp-python {}, {} threads, prompt shared across sequences, {tokens} tokens per sequence); greedy agreement with ours: first {agree} of {} tokens",
        v["llama_cpp_python"].as_str().unwrap_or("?"),
        v["threads"],
        theirs_greedy.len()
    );
    for &n in samples {
        let mut rates = Vec::new();
        for _ in 0..runs.max(1) {
            rates.push(fixed_length(worker, &prompt, n, tokens).await?.0);
        }
        rates.sort_by(f64::total_cmp);
        let ours = rates[rates.len() / 2];
        let cell = |precision: &str| {
            let e = &v["precisions"][precision][n.to_string()];
            format!(
                "{:>7.0} tok/s (n_batch {}, n_ubatch {}, kv_unified {})",
                e["tok_s"].as_f64().unwrap_or(f64::NAN),
                e["n_batch"],
                e["n_ubatch"],
                e["kv_unified"]
            )
        };
        let f32_rate = v["precisions"]["f32"][n.to_string()]["tok_s"]
            .as_f64()
            .unwrap_or(f64::NAN);
        println!(
            "  n = {n:>2}: ponder f32 {ours:>7.0} tok/s | llama.cpp f32 {} | llama.cpp Q8_0 {} | ponder/llama.cpp f32 {:.2}x",
            cell("f32"),
            cell("q8_0"),
            ours / f32_rate
        );
    }
    Ok(())
}

/// Aggregate tok/s of `n` fixed-length sequences of one prompt, and the first one's ids.
async fn fixed_length(
    worker: &ModelWorker,
    prompt: &str,
    n: u32,
    tokens: usize,
) -> anyhow::Result<(f64, Vec<u32>)> {
    let params = SamplingParams {
        temperature: if n == 1 { 0.0 } else { 0.8 },
        max_tokens: tokens,
        ignore_eos: true,
        seed: 1,
        ..Default::default()
    };
    let t = Instant::now();
    let resp = worker
        .generate(GenerateRequest {
            prompt: prompt.to_string(),
            n,
            params,
        })
        .await?;
    let generated: u32 = resp.completions.iter().map(|c| c.tokens).sum();
    let first = resp
        .completions
        .first()
        .map(|c| c.token_ids.clone())
        .unwrap_or_default();
    Ok((generated as f64 / t.elapsed().as_secs_f64(), first))
}
