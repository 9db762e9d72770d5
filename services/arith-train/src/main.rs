//! `ponder-arith`: train and evaluate the bundled models.
//!
//!     cargo run --release --bin ponder-arith -- train-generator --out DIR --eval-every 200
//!     cargo run --release --bin ponder-arith -- eval-generator --model DIR/checkpoint
//!     cargo run --release --bin ponder-arith -- sample --model DIR --out data/prm-train.jsonl
//!     cargo run --release --bin ponder-arith -- train-prm --init DIR --samples data/prm-train.jsonl
//!
//! The recipe for the shipped models is `models/train-ladder.sh`.

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ponder_arith::slice::Slice;
use ponder_arith::{solution, task};
use ponder_arith_train::report::{prm_validation, GeneratorUnderTest, ReportConfig};
use ponder_arith_train::train::data::{sample_batch, DEFAULT_LEVEL_MIX};
use ponder_arith_train::train::model::ModelShape;
use ponder_arith_train::train::prm_data::{self, LabelledSolution};
use ponder_arith_train::train::trainer::{
    encode_example, train, Encoded, Objective, TrainConfig, TrainHooks, TrainState,
};
use ponder_arith_train::vocab::{Vocab, NEGATIVE, POSITIVE};
use ponder_engine::prm::Chain;
use ponder_engine::{LoadOptions, ModelWorker, SamplingParams, WorkerConfig};
use ponder_worker::manifest::{serving_options, ModelEntry, ModelRole, ModelsDir};
use rand::Rng;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "ponder-arith",
    version,
    about = "The ponder-arith task: train and evaluate the bundled models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Settings shared by both training commands (the schedule: `train::trainer`'s docs).
#[derive(Args)]
struct Schedule {
    /// Most steps to take; the final decay starts `--decay-steps` before at the latest.
    #[arg(long, alias = "steps", default_value_t = 20_000)]
    max_steps: usize,
    /// Characters per batch (examples of one level are added until reached).
    #[arg(long, default_value_t = 4096)]
    batch_tokens: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Steps of the final linear decay to lr/10, once held-out accuracy stops improving.
    #[arg(long, default_value_t = 300)]
    decay_steps: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Steps between kept copies under `<out>/milestones/` (0: none).
    #[arg(long, default_value_t = 1000)]
    milestone_every: usize,
    /// Steps between held-out evaluations (a multiple of --checkpoint-every; 0: none,
    /// the run goes to --max-steps).
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    /// Evaluations in a row that must gain --min-gain points before the decay starts.
    #[arg(long, default_value_t = 3)]
    patience: usize,
    #[arg(long, default_value_t = 1.0)]
    min_gain: f64,
    /// Steps before which the decay never starts.
    #[arg(long, default_value_t = 0)]
    min_steps: usize,
    /// Continue from `<out>/checkpoint` if present (weights, optimizer, data position).
    #[arg(long)]
    resume: bool,
}

/// Which training stream: what share of it is drawn in the contract style (docs/arith.md).
#[derive(Args, Clone, Copy)]
struct Mix {
    /// Share of training questions drawn in the contract style (uniform tree shapes and
    /// operands, whole draws rejected); 0.5 is the stream the shipped generators finished
    /// on, 0 the first mixture alone (what the ladder trained on from scratch).
    #[arg(
        long = "contract-share",
        value_name = "SHARE",
        default_value = "0.5",
        value_parser = training_mix
    )]
    stream: task::TrainingMix,
}

fn training_mix(contract_share: &str) -> Result<task::TrainingMix, String> {
    let share: f64 = contract_share
        .parse()
        .map_err(|e| format!("{contract_share:?} is not a number: {e}"))?;
    task::TrainingMix::new(share)
}

/// The step labels a PRM is trained on (`train-prm --labels`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StepLabels {
    OnTrack,
    Local,
}

#[derive(Subcommand)]
enum Command {
    /// Train the generator (fresh attempts and revisions) from scratch, or resume.
    TrainGenerator {
        #[arg(long, default_value = "models/arith-gen-new")]
        out: PathBuf,
        /// Start from this generator's weights (a model directory) instead of a random
        /// initialisation; its config.json sets the shape (--hidden, --layers, --heads and
        /// --intermediate are ignored). The optimizer and the data stream start fresh.
        #[arg(long)]
        init: Option<PathBuf>,
        #[command(flatten)]
        schedule: Schedule,
        #[arg(long, default_value_t = 128)]
        hidden: usize,
        #[arg(long, default_value_t = 6)]
        layers: usize,
        #[arg(long, default_value_t = 4)]
        heads: usize,
        /// MLP width (default: 3 x hidden).
        #[arg(long)]
        intermediate: Option<usize>,
        /// Validation questions per level for the periodic greedy evaluation.
        #[arg(long, default_value_t = 50)]
        eval_per_level: usize,
        #[arg(long, default_value_t = 0.2)]
        revision_fraction: f64,
        /// JSONL from `sample`: the model's own wrong solutions become revision
        /// examples (a share `--own-fraction` of batches).
        #[arg(long)]
        own_attempts: Option<PathBuf>,
        #[arg(long, default_value_t = 0.15)]
        own_fraction: f64,
        #[command(flatten)]
        mix: Mix,
    },
    /// Sample solutions from generators and label every step with the checker (JSONL),
    /// on training-slice questions only (PRM and revision training data).
    Sample {
        /// Generator directories (repeatable: every rung of the ladder).
        #[arg(long, required = true)]
        model: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 100)]
        per_level: usize,
        #[arg(short, default_value_t = 8)]
        n: u32,
        /// Sampling temperatures (repeatable: each model samples at each).
        #[arg(long, default_values_t = [0.8])]
        temperature: Vec<f32>,
        /// Question seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        mix: Mix,
    },
    /// Train the PRM (token-probability convention) starting from the generator's weights.
    TrainPrm {
        #[arg(long, default_value = "models/arith-prm")]
        out: PathBuf,
        /// Generator directory to start from (its shape is reused).
        #[arg(long, default_value = "models/arith-gen-l")]
        init: PathBuf,
        /// Labelled generator samples from `sample` (JSONL).
        #[arg(long)]
        samples: Option<PathBuf>,
        /// Share of each batch drawn from canonical solutions with injected slips.
        #[arg(long, default_value_t = 0.3)]
        synthetic_fraction: f64,
        /// Draw right and wrong samples equally often (the samples are mostly right).
        #[arg(long)]
        balance: bool,
        /// What a step's label says: `on-track` (it and every step before it are right)
        /// or `local` (it is the right step from the expression before it; the engine
        /// then chains the step scores into a running product, written to prm.json).
        #[arg(long, value_enum, default_value_t = StepLabels::OnTrack)]
        labels: StepLabels,
        #[command(flatten)]
        schedule: Schedule,
        #[command(flatten)]
        mix: Mix,
    },
    /// The figures the bundled models are judged by, on the independent and the
    /// training-style sampler: greedy and pass@k per level for every generator of the
    /// manifest, the verifier's AUROC and first-error F1 on their samples, revisions
    /// against fresh samples, and the train/eval overlap (docs/results.md).
    Report {
        /// Models directory (manifest.json: every generator, and the default verifier).
        #[arg(long, default_value = "models")]
        models: PathBuf,
        /// Only these generators of the manifest (by name; repeatable).
        #[arg(long = "only")]
        only: Vec<String>,
        /// A few minutes on 2 cores: few questions, k=8.
        #[arg(long)]
        quick: bool,
        /// Greedy questions per level (default: 500, --quick 20).
        #[arg(long)]
        per_level: Option<usize>,
        /// Questions per level sampled k times (default: 100, --quick 3).
        #[arg(long)]
        pass_per_level: Option<usize>,
        /// Samples per question for pass@k (default: 64, --quick 8).
        #[arg(short)]
        k: Option<u32>,
        /// Wrong samples per question revised (default: 2, --quick 1).
        #[arg(long)]
        revisions_per_question: Option<usize>,
        /// Also write the report as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The verifier of the manifest to measure, by name (default: the default one).
        #[arg(long)]
        verifier: Option<String>,
        /// Also write every sample the verifier scored (its step scores, the checker's
        /// labels, validation or own) here, one JSON object per line.
        #[arg(long)]
        scores_out: Option<PathBuf>,
        /// The training stream the models were trained on: the training-style set follows
        /// its styles, and the overlap count redraws it.
        #[command(flatten)]
        mix: Mix,
    },
    /// Greedy accuracy per level on a held-out set (seed and size given).
    EvalGenerator {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 20)]
        per_level: usize,
        #[arg(long, default_value_t = 20261129)]
        seed: u64,
        /// Draw from the independent evaluation sampler instead of the trainer's held-out set.
        #[arg(long)]
        independent: bool,
        /// Quantize the weights at load (none, q8_0 or bf16), to check what it costs.
        #[arg(long, default_value = "none")]
        quantize: ponder_engine::Quantize,
    },
}

/// Keeps freed memory in the process instead of returning it to the kernel.
///
/// Why: training allocates and frees tensors of tens of MB every op; with
/// glibc's defaults each one is a fresh mmap whose pages are faulted in and
/// zeroed again, which measured as ~45% of training time (1.8x slower).
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

fn print_trained(state: &TrainState) {
    println!(
        "trained {} steps, {:.1}M tokens in {:.0}s",
        state.step,
        state.tokens as f64 / 1e6,
        state.seconds
    );
}

fn config(
    out: PathBuf,
    shape: ModelShape,
    s: &Schedule,
    init_from: Option<PathBuf>,
    objective: Objective,
    mix: task::TrainingMix,
) -> TrainConfig {
    TrainConfig {
        out,
        shape,
        max_steps: s.max_steps,
        batch_tokens: s.batch_tokens,
        lr: s.lr,
        warmup: s.warmup,
        decay_steps: s.decay_steps,
        seed: s.seed,
        checkpoint_every: s.checkpoint_every,
        milestone_every: s.milestone_every,
        eval_every: s.eval_every,
        patience: s.patience,
        min_gain: s.min_gain,
        min_steps: s.min_steps,
        init_from,
        objective,
        mix,
    }
}

fn main() -> Result<()> {
    keep_freed_memory();
    ponder_engine::engine::init_cpu_threads();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let vocab = Vocab::new()?;
    match Cli::parse().command {
        Command::TrainGenerator {
            out,
            init,
            schedule,
            hidden,
            layers,
            heads,
            intermediate,
            eval_per_level,
            revision_fraction,
            own_attempts,
            own_fraction,
            mix,
        } => {
            let own: Vec<(String, String)> = match &own_attempts {
                Some(path) => prm_data::read_jsonl(path)?
                    .into_iter()
                    .filter(|s| !s.correct && !s.steps.is_empty())
                    .map(|s| (s.question, s.steps.join("\n")))
                    .collect(),
                None => vec![],
            };
            anyhow::ensure!(
                own_attempts.is_none() || !own.is_empty(),
                "--own-attempts holds no wrong solutions"
            );
            let shape = match &init {
                Some(dir) => ModelShape::from_hf_config(&dir.join("config.json"))?,
                None => ModelShape {
                    hidden,
                    layers,
                    heads,
                    intermediate: intermediate.unwrap_or(hidden * 3),
                    vocab: vocab.size(),
                    max_positions: 2048,
                    rope_theta: 10_000.0,
                },
            };
            let cfg = config(
                out,
                shape,
                &schedule,
                init,
                Objective::NextToken,
                mix.stream,
            );
            let mut next_batch =
                |rng: &mut rand_chacha::ChaCha8Rng, budget| -> Result<Vec<Encoded>> {
                    let batch = if !own.is_empty() && rng.random_bool(own_fraction) {
                        ponder_arith_train::train::data::own_revision_batch(rng, &own, budget)?
                    } else {
                        sample_batch(
                            rng,
                            DEFAULT_LEVEL_MIX,
                            mix.stream,
                            revision_fraction,
                            budget,
                        )?
                    };
                    batch
                        .iter()
                        .map(|ex| encode_example(&vocab, &ex.prompt, &ex.target))
                        .collect()
                };
            // Greedy accuracy on the validation slice (never trained on, never the
            // evaluation sampler's questions).
            let validation = task::validation_set(VALIDATION_SEED, eval_per_level, mix.stream);
            let mut evaluate = |dir: &Path| -> Result<f64> {
                ponder_engine::engine::cli_runtime()?.block_on(greedy_accuracy(dir, &validation))
            };
            let hooks = TrainHooks {
                next_batch: &mut next_batch,
                evaluate: Some(&mut evaluate),
            };
            let state = train(cfg, schedule.resume, hooks)?;
            print_trained(&state);
        }
        Command::Sample {
            model,
            out,
            per_level,
            n,
            temperature,
            seed,
            mix,
        } => {
            ponder_engine::engine::cli_runtime()?.block_on(sample(
                model,
                out,
                per_level,
                n,
                temperature,
                seed,
                mix.stream,
            ))?;
        }
        Command::TrainPrm {
            out,
            init,
            samples,
            synthetic_fraction,
            balance,
            labels,
            schedule,
            mix,
        } => {
            let shape = ModelShape::from_hf_config(&init.join("config.json"))?;
            let pool: Vec<LabelledSolution> = match &samples {
                Some(path) => prm_data::read_jsonl(path)?,
                None => vec![],
            };
            // One question in 10 (all its samples) is held out: the periodic evaluation
            // that stops the schedule (step and final-answer AUROC) runs on those.
            let (pool, validation) = prm_validation::split_validation(pool, 10, 600);
            // A runaway sample (a high-temperature one that never stopped) can be longer
            // than the model's positions; it cannot be trained on whole, so it is left out.
            let before = pool.len();
            let pool: Vec<LabelledSolution> = pool
                .into_iter()
                .filter(|ex| {
                    prm_data::encode(&vocab, ex).is_ok_and(|e| e.ids.len() <= shape.max_positions)
                })
                .collect();
            let pool: Vec<LabelledSolution> = match labels {
                StepLabels::OnTrack => pool,
                StepLabels::Local => pool.iter().map(prm_data::local_labels).collect(),
            };
            for (what, correct) in [("right", true), ("wrong", false)] {
                let (samples, tags, negative) = pool.iter().filter(|s| s.correct == correct).fold(
                    (0, 0, 0),
                    |(n, t, neg), s| {
                        let bad = s.labels.iter().filter(|ok| !**ok).count();
                        (n + 1, t + s.labels.len(), neg + bad)
                    },
                );
                println!("{samples} {what} samples: {tags} step labels, {negative} negative");
            }
            if pool.len() < before {
                println!(
                    "left out {} samples longer than {} positions",
                    before - pool.len(),
                    shape.max_positions
                );
            }
            anyhow::ensure!(
                !pool.is_empty() || synthetic_fraction > 0.0,
                "give --samples or a synthetic fraction above 0"
            );
            let (right, wrong): (Vec<&LabelledSolution>, Vec<&LabelledSolution>) =
                pool.iter().partition(|s| s.correct);
            anyhow::ensure!(
                !balance || (!right.is_empty() && !wrong.is_empty()),
                "--balance needs right and wrong samples ({} right, {} wrong)",
                right.len(),
                wrong.len()
            );
            let objective = Objective::StepLabels {
                positive: vocab.id(POSITIVE)?,
                negative: vocab.id(NEGATIVE)?,
                chain: match labels {
                    StepLabels::OnTrack => Chain::None,
                    StepLabels::Local => Chain::Product,
                },
            };
            let cfg = config(out, shape, &schedule, Some(init), objective, mix.stream);
            let mut next_batch =
                |rng: &mut rand_chacha::ChaCha8Rng, budget| -> Result<Vec<Encoded>> {
                    let mut batch = Vec::new();
                    let mut chars = 0;
                    while chars < budget {
                        let ex = if pool.is_empty() || rng.random_bool(synthetic_fraction) {
                            prm_data::synthetic(rng, DEFAULT_LEVEL_MIX, mix.stream)?
                        } else if balance {
                            let class = if rng.random_bool(0.5) { &right } else { &wrong };
                            class[rng.random_range(0..class.len())].clone()
                        } else {
                            pool[rng.random_range(0..pool.len())].clone()
                        };
                        let enc = prm_data::encode(&vocab, &ex)?;
                        chars += enc.ids.len();
                        batch.push(enc);
                    }
                    Ok(batch)
                };
            let mut evaluate = |dir: &Path| -> Result<f64> {
                ponder_engine::engine::cli_runtime()?
                    .block_on(prm_validation::validation_auroc(dir, &validation))
            };
            let hooks = TrainHooks {
                next_batch: &mut next_batch,
                evaluate: (!validation.is_empty()).then_some(&mut evaluate),
            };
            let state = train(cfg, schedule.resume, hooks)?;
            print_trained(&state);
        }
        Command::Report {
            models,
            only,
            quick,
            per_level,
            pass_per_level,
            k,
            revisions_per_question,
            out,
            verifier,
            scores_out,
            mix,
        } => {
            let mut cfg = if quick {
                ReportConfig::quick()
            } else {
                ReportConfig::full()
            };
            cfg.greedy_per_level = per_level.unwrap_or(cfg.greedy_per_level);
            cfg.sampled_per_level = pass_per_level.unwrap_or(cfg.sampled_per_level);
            cfg.k = k.unwrap_or(cfg.k);
            cfg.revisions_per_question =
                revisions_per_question.unwrap_or(cfg.revisions_per_question);
            cfg.training_mix = mix.stream;
            anyhow::ensure!(
                cfg.greedy_per_level >= cfg.sampled_per_level && cfg.k >= 1,
                "--pass-per-level must be at most --per-level, and -k at least 1"
            );
            let dir = ModelsDir::open(&models)?;
            let open = |m: &ModelEntry| -> Result<ModelWorker> {
                dir.verify(m)?;
                let path = dir.path_of(m);
                Ok(ModelWorker::spawn(
                    ponder_engine::load(&path, &serving_options(&path))?,
                    WorkerConfig::default(),
                ))
            };
            let mut generators = vec![];
            for m in dir
                .manifest
                .models
                .iter()
                .filter(|m| m.role == ModelRole::Generator)
            {
                if only.is_empty() || only.contains(&m.name) {
                    generators.push(GeneratorUnderTest {
                        name: m.name.clone(),
                        parameters: m.parameters,
                        worker: open(m)?,
                    });
                }
            }
            anyhow::ensure!(
                !generators.is_empty(),
                "no generator of {} matches --only {only:?}",
                models.display()
            );
            let verifier = match dir.select_or_default(ModelRole::Verifier, verifier.as_deref())? {
                Some(m) => Some((m.name.clone(), open(m)?)),
                None => None,
            };
            let started = std::time::Instant::now();
            let report =
                ponder_engine::engine::cli_runtime()?.block_on(ponder_arith_train::report::run(
                    &cfg,
                    &generators,
                    verifier.as_ref().map(|(n, w)| (n.as_str(), w)),
                ))?;
            print!("{}", ponder_arith_train::report::render(&report));
            println!("measured in {:.0} s", started.elapsed().as_secs_f64());
            if let Some(out) = out {
                std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
                println!("wrote {}", out.display());
            }
            if let Some(path) = scores_out {
                let mut lines = String::new();
                for record in &report.scored {
                    lines.push_str(&serde_json::to_string(record)?);
                    lines.push('\n');
                }
                std::fs::write(&path, lines)?;
                println!(
                    "wrote {} scored samples to {}",
                    report.scored.len(),
                    path.display()
                );
            }
        }
        Command::EvalGenerator {
            model,
            per_level,
            seed,
            independent,
            quantize,
        } => {
            let problems = if independent {
                ponder_arith::eval_sampler::eval_set(seed, per_level)
            } else {
                task::held_out_set(seed, per_level)
            };
            ponder_engine::engine::cli_runtime()?
                .block_on(eval_generator(model, &problems, quantize))?;
        }
    }
    Ok(())
}

/// Greedy generation of one solution per question.
/// `n` completions of each question's prompt (EOS and trailing whitespace removed).
async fn solve_all(
    worker: &ModelWorker,
    questions: &[String],
    n: u32,
    params: SamplingParams,
) -> Result<Vec<Vec<String>>> {
    let prompts = questions.iter().map(|q| solution::prompt(q)).collect();
    ponder_arith_train::report::measure::complete(worker, prompts, n, &params).await
}

fn params(temperature: f32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        max_tokens: 1500,
        seed,
        ..Default::default()
    }
}

async fn sample(
    models: Vec<PathBuf>,
    out: PathBuf,
    per_level: usize,
    n: u32,
    temperatures: Vec<f32>,
    seed: u64,
    mix: task::TrainingMix,
) -> Result<()> {
    // Training-slice questions only: the samples train the PRM and the revisions.
    let questions: Vec<String> = task::styled_set(Slice::Training, seed, per_level, mix)
        .into_iter()
        .map(|p| p.question)
        .collect();
    let mut file = std::fs::File::create(&out)?;
    for model in &models {
        let worker = ModelWorker::spawn(
            ponder_engine::load(model, &LoadOptions::default())?,
            WorkerConfig::default(),
        );
        let name = model
            .file_name()
            .map_or("model".into(), |n| n.to_string_lossy());
        for (i, &t) in temperatures.iter().enumerate() {
            let texts = solve_all(&worker, &questions, n, params(t, seed + i as u64)).await?;
            let (mut total, mut correct) = (0, 0);
            for (q, samples) in questions.iter().zip(texts) {
                for text in samples {
                    let mut labelled = prm_data::label(q, &text);
                    labelled.source = Some(format!("{name}@{t}"));
                    total += 1;
                    correct += labelled.correct as usize;
                    writeln!(file, "{}", serde_json::to_string(&labelled)?)?;
                }
            }
            println!("{name} at T={t}: {total} samples ({correct} correct)");
        }
    }
    println!("written to {}", out.display());
    Ok(())
}

/// Seed of the trainer's validation set (questions of the validation slice).
const VALIDATION_SEED: u64 = 20261201;

/// Greedy accuracy (in %) of the model in `dir` on `problems`.
async fn greedy_accuracy(dir: &Path, problems: &[task::Problem]) -> Result<f64> {
    let worker = ModelWorker::spawn(
        ponder_engine::load(dir, &LoadOptions::default())?,
        WorkerConfig::default(),
    );
    let questions: Vec<String> = problems.iter().map(|p| p.question.clone()).collect();
    let texts = solve_all(&worker, &questions, 1, params(0.0, 0)).await?;
    let right = problems
        .iter()
        .zip(&texts)
        .filter(|(p, t)| solution::extract_answer(&t[0]) == Some(p.answer))
        .count();
    Ok(100.0 * right as f64 / problems.len().max(1) as f64)
}

async fn eval_generator(
    model: PathBuf,
    problems: &[task::Problem],
    quantize: ponder_engine::Quantize,
) -> Result<()> {
    let opts = LoadOptions {
        quantize,
        ..LoadOptions::default()
    };
    let worker = ModelWorker::spawn(ponder_engine::load(&model, &opts)?, WorkerConfig::default());
    let questions: Vec<String> = problems.iter().map(|p| p.question.clone()).collect();
    let texts = solve_all(&worker, &questions, 1, params(0.0, 0)).await?;
    let mut correct = [0usize; 7];
    let mut total = [0usize; 7];
    for (p, samples) in problems.iter().zip(texts) {
        total[p.level as usize] += 1;
        correct[p.level as usize] +=
            (solution::extract_answer(&samples[0]) == Some(p.answer)) as usize;
    }
    for level in 1..=6 {
        println!(
            "level {level}: {}/{} greedy correct",
            correct[level], total[level]
        );
    }
    let (all, n): (usize, usize) = (correct.iter().sum(), total.iter().sum());
    println!(
        "overall: {all}/{n} = {:.1}%",
        100.0 * all as f64 / n.max(1) as f64
    );
    Ok(())
}
