//! `ponder-engine`: the engine on its own, for trying a model from the shell.
//!
//!     ponder-engine generate --model SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt "What is 2+2?" -n 4
//!     ponder-engine score --model models/arith-prm --question "3+4" --step "3+4=7" --step "Answer: 7"

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ponder_engine::{
    load, GenerateRequest, LoadOptions, ModelWorker, SamplingParams, ScoreRequest, WorkerConfig,
};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "ponder-engine",
    version,
    about = "Run Ponder's inference engine on a local model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ModelArgs {
    /// A .gguf file or a Hugging Face model directory (config.json + safetensors + tokenizer.json).
    #[arg(long, env = "PONDER_MODEL")]
    model: PathBuf,
    /// Use this tokenizer.json instead of the one beside the model / the GGUF vocabulary.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Compute dtype for safetensors models: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Compute threads of the model worker (0: one for a model under 20M parameters,
    /// every core for a larger one).
    #[arg(long, env = "PONDER_THREADS", default_value_t = 0)]
    threads: usize,
    /// Quantize a safetensors model's linear layers at load: none, q8_0 or bf16 (docs/engine.md).
    #[arg(long, env = "PONDER_QUANTIZE", default_value = "none")]
    quantize: ponder_engine::Quantize,
    /// How the KV cache stores keys and values: f32 (exact) or f16 (half the bytes).
    #[arg(long, env = "PONDER_KV_CACHE_DTYPE", default_value = "f32")]
    kv_cache_dtype: ponder_engine::KvDtype,
}

impl ModelArgs {
    fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            threads: self.threads,
            ..WorkerConfig::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Sample completions of a prompt.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt in a ChatML user turn (SmolLM2, Qwen2 instruct models).
        #[arg(long)]
        chat: bool,
        #[arg(short, default_value_t = 1)]
        n: u32,
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// Stop string (repeatable), e.g. --stop $'\n'.
        #[arg(long)]
        stop: Vec<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Score the steps of one candidate solution with a PRM.
    Score {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        question: String,
        /// One step of the solution (repeat in order).
        #[arg(long = "step", required = true)]
        steps: Vec<String>,
    },
    /// Print token ids of a text.
    Tokenize {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        text: String,
    },
    /// Print the most likely next tokens after a prompt, with their logits.
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Print what the loader found.
    Info {
        #[command(flatten)]
        model: ModelArgs,
    },
}

fn open(args: &ModelArgs) -> anyhow::Result<ponder_engine::LoadedModel> {
    let dtype = match args.dtype.as_str() {
        "f32" => candle_core::DType::F32,
        "bf16" => candle_core::DType::BF16,
        "f16" => candle_core::DType::F16,
        other => anyhow::bail!("--dtype must be f32, bf16 or f16, got {other}"),
    };
    let opts = LoadOptions {
        device: ponder_engine::engine::default_device(),
        dtype,
        tokenizer: args.tokenizer.clone(),
        prm: None,
        quantize: args.quantize,
        kv_cache: args.kv_cache_dtype,
    };
    let t = Instant::now();
    let loaded =
        load(&args.model, &opts).with_context(|| format!("loading {}", args.model.display()))?;
    loaded.warm_up()?;
    eprintln!(
        "loaded {} ({}, {}) in {:.2?}",
        loaded.info.id,
        loaded.info.architecture,
        loaded.info.format,
        t.elapsed()
    );
    Ok(loaded)
}

fn main() -> anyhow::Result<()> {
    ponder_engine::engine::cli_runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    match Cli::parse().command {
        Command::Generate {
            model,
            prompt,
            chat,
            n,
            temperature,
            top_p,
            top_k,
            max_tokens,
            stop,
            seed,
        } => {
            let worker = ModelWorker::spawn(open(&model)?, model.worker_config());
            let prompt = if chat {
                format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
            } else {
                prompt
            };
            let params = SamplingParams {
                temperature,
                top_p,
                top_k,
                max_tokens,
                stop,
                seed,
                ignore_eos: false,
            };
            let t = Instant::now();
            let resp = worker
                .generate(GenerateRequest { prompt, n, params })
                .await?;
            let elapsed = t.elapsed();
            let total: u32 = resp.completions.iter().map(|c| c.tokens).sum();
            for c in &resp.completions {
                println!(
                    "--- sample {} ({} tokens, {}, logprob {:.2})\n{}",
                    c.index,
                    c.tokens,
                    c.finish_reason.as_str(),
                    c.logprob,
                    c.text
                );
            }
            eprintln!(
                "{} prompt tokens, {total} generated in {:.2?} ({:.1} tok/s)",
                resp.prompt_tokens,
                elapsed,
                total as f64 / elapsed.as_secs_f64()
            );
        }
        Command::Score {
            model,
            question,
            steps,
        } => {
            let worker = ModelWorker::spawn(open(&model)?, model.worker_config());
            let resp = worker
                .score(ScoreRequest {
                    question,
                    candidates: vec![steps.clone()],
                })
                .await?;
            for (step, score) in steps.iter().zip(&resp.scores[0]) {
                println!("{score:.4}  {step}");
            }
        }
        Command::Tokenize { model, text } => {
            let loaded = open(&model)?;
            println!("{:?}", loaded.codec.encode(&text, true)?);
        }
        Command::Logits { model, prompt, top } => {
            let loaded = open(&model)?;
            let ids = loaded.codec.encode(&prompt, true)?;
            anyhow::ensure!(!ids.is_empty(), "the prompt encodes to no tokens");
            let mut cache = loaded.model.new_cache();
            let segment = ponder_engine::model::Segment {
                tokens: &ids,
                cache: &mut cache,
            };
            let hidden = loaded.model.forward(&mut [segment])?;
            let logits: Vec<f32> = loaded
                .model
                .logits(&hidden.narrow(0, ids.len() - 1, 1)?)?
                .flatten_all()?
                .to_vec1()?;
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
            for &i in order.iter().take(top) {
                println!(
                    "{i}\t{:.5}\t{:?}",
                    logits[i],
                    loaded.codec.decode(&[i as u32])?
                );
            }
        }
        Command::Info { model } => {
            let loaded = open(&model)?;
            println!("{}", serde_json::to_string_pretty(&loaded.info)?);
        }
    }
    Ok(())
}
