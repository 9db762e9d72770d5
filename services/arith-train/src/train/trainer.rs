//! The training loop: seeded batches, masked cross-entropy or step labels, AdamW on a
//! warm-up / constant / decay schedule that ends once held-out accuracy stops improving,
//! checkpoints that resume exactly, and milestone checkpoints that are never overwritten.
//!
//! Why checkpoints hold everything: a session's processes end with it, so training runs
//! for hours across sessions. `<out>/checkpoint/` is a complete Hugging Face layout
//! (`config.json`, `model.safetensors`, `tokenizer.json`) plus `optimizer.safetensors`
//! (AdamW's moments, [`super::adamw`]) and `train_state.json` (the step reached, which is
//! also the data position: batch `s` is drawn from an RNG seeded by `(seed, s)`, and the
//! evaluations so far). `--resume` therefore continues one schedule: a resumed run takes
//! exactly the steps an uninterrupted one would (a test checks the weights match).
//! Every `milestone_every` steps a copy goes to `<out>/milestones/step-NNNNNN/`.
//!
//! Why the schedule has no fixed length: a model is trained "until its held-out accuracy
//! stops improving", which nobody knows in advance. The learning rate warms up, stays
//! constant, and once `patience` evaluations in a row gained less than `min_gain` points
//! over the best before them (after `min_steps`; or at `max_steps - decay_steps`) it decays linearly
//! to a tenth over `decay_steps`, and the run ends (warmup-stable-decay).

use super::adamw::{AdamW, AdamWParams};
use super::model::{ModelShape, TrainLlama};
use crate::vocab::{Vocab, EOS};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use ponder_engine::prm::Chain;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A tokenized example for either objective.
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Next-token objective: `loss_on[i]` = whether predicting `ids[i + 1]` counts.
    pub loss_on: Vec<bool>,
    /// Step-label objective: (position of a step tag in `ids`, step is on track).
    pub tags: Vec<(usize, bool)>,
}

/// What the model is trained to do.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum Objective {
    /// Language modelling on the target part of each example (the generator).
    #[default]
    NextToken,
    /// Token-probability PRM: at each step tag, P(positive) vs P(negative) from the
    /// lm-head logits of those two tokens, exactly as the engine reads them.
    /// `chain` is what the labels meant (prm.json's `chain`): `None` for "on track",
    /// `Product` for local labels.
    StepLabels {
        positive: u32,
        negative: u32,
        #[serde(default)]
        chain: Chain,
    },
}

/// Prompt tokens carry no loss; target tokens do.
pub fn encode_example(vocab: &Vocab, prompt: &str, target: &str) -> Result<Encoded> {
    let p = vocab.encode(prompt)?;
    let t = vocab.encode(target)?;
    let mut ids = p.clone();
    ids.extend_from_slice(&t);
    let loss_on = (0..ids.len() - 1).map(|i| i + 1 >= p.len()).collect();
    Ok(Encoded {
        ids,
        loss_on,
        tags: vec![],
    })
}

/// Pads a batch to its longest sequence: (inputs, targets, mask) of shape (batch, len - 1).
pub fn collate(batch: &[Encoded], pad: u32, dev: &Device) -> Result<(Tensor, Tensor, Tensor)> {
    let len = batch.iter().map(|e| e.ids.len()).max().unwrap_or(2).max(2);
    let (mut inputs, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for e in batch {
        for i in 0..len - 1 {
            inputs.push(*e.ids.get(i).unwrap_or(&pad));
            targets.push(*e.ids.get(i + 1).unwrap_or(&pad));
            mask.push(if e.loss_on.get(i).copied().unwrap_or(false) {
                1f32
            } else {
                0f32
            });
        }
    }
    let shape = (batch.len(), len - 1);
    Ok((
        Tensor::from_vec(inputs, shape, dev)?,
        Tensor::from_vec(targets, shape, dev)?,
        Tensor::from_vec(mask, shape, dev)?,
    ))
}

/// Step-label loss: inputs are the whole sequences (tags may be last), and the
/// 2-way softmax over (positive, negative) logits at every tag is scored.
fn step_label_loss(
    model: &TrainLlama,
    batch: &[Encoded],
    pad: u32,
    positive: u32,
    negative: u32,
    dev: &Device,
) -> Result<Tensor> {
    let len = batch.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(batch.len() * len);
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for (b, e) in batch.iter().enumerate() {
        ids.extend((0..len).map(|i| *e.ids.get(i).unwrap_or(&pad)));
        for (pos, ok) in &e.tags {
            rows.push((b * len + pos) as u32);
            labels.push(if *ok { 0u32 } else { 1u32 });
        }
    }
    anyhow::ensure!(
        !rows.is_empty(),
        "a step-label batch needs at least one tag"
    );
    let logits = model.forward(&Tensor::from_vec(ids, (batch.len(), len), dev)?)?;
    let vocab = logits.dim(D::Minus1)?;
    let at_tags = logits
        .reshape((batch.len() * len, vocab))?
        .index_select(&Tensor::new(rows.as_slice(), dev)?, 0)?;
    let pair = at_tags.index_select(&Tensor::new(&[positive, negative], dev)?, 1)?;
    let logp = candle_nn::ops::log_softmax(&pair, D::Minus1)?;
    let n = labels.len();
    let picked = logp.gather(&Tensor::from_vec(labels, (n, 1), dev)?, 1)?;
    Ok((picked.sum_all()?.neg()? / n as f64)?)
}

/// Mean cross-entropy over masked positions. logits (b, t, v), targets/mask (b, t).
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let total = mask.sum_all()?;
    Ok((picked.mul(mask)?.sum_all()?.neg()? / total.to_scalar::<f32>()?.max(1.0) as f64)?)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub out: PathBuf,
    pub shape: ModelShape,
    /// Hard cap on steps (the decay starts `decay_steps` before it at the latest).
    #[serde(alias = "steps")]
    pub max_steps: usize,
    /// Characters (= tokens) per batch; examples are added until it is reached.
    pub batch_tokens: usize,
    pub lr: f64,
    pub warmup: usize,
    /// Steps of the final linear decay to `lr / 10`.
    #[serde(default)]
    pub decay_steps: usize,
    pub seed: u64,
    pub checkpoint_every: usize,
    /// Copies kept under `<out>/milestones/` (0: none).
    #[serde(default)]
    pub milestone_every: usize,
    /// Steps between held-out evaluations (0: none, the run goes to `max_steps`).
    #[serde(default)]
    pub eval_every: usize,
    /// Evaluations in a row that must gain `min_gain` points before the decay starts.
    #[serde(default = "default_patience")]
    pub patience: usize,
    #[serde(default = "default_min_gain")]
    pub min_gain: f64,
    /// Steps before which the decay never starts (early evaluations are all near 0).
    #[serde(default)]
    pub min_steps: usize,
    /// Start from these weights (a model directory) instead of a seeded init.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Absent in checkpoints written before PRM training existed: those were generators.
    #[serde(default)]
    pub objective: Objective,
    /// The question stream (absent in checkpoints written before the contract style
    /// existed: those trained on the first mixture, `TrainingMix::FIRST`).
    #[serde(default)]
    pub mix: ponder_arith::task::TrainingMix,
}

fn default_patience() -> usize {
    3
}

fn default_min_gain() -> f64 {
    1.0
}

/// One held-out evaluation during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: usize,
    /// The evaluator's figure, in points (e.g. greedy accuracy in %).
    pub score: f64,
    pub tokens: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub step: usize,
    pub config: TrainConfig,
    /// Wall-clock seconds spent training, summed over sessions.
    pub seconds: f64,
    pub tokens: u64,
    /// The step the final decay started at, once it has.
    #[serde(default)]
    pub decay_from: Option<usize>,
    #[serde(default)]
    pub evals: Vec<EvalPoint>,
}

impl TrainState {
    /// The step the run ends at, once known.
    pub fn end_step(&self) -> usize {
        let cfg = &self.config;
        match self.decay_from {
            Some(d) => (d + cfg.decay_steps).min(cfg.max_steps),
            None => cfg.max_steps,
        }
    }

    /// Whether the last `patience` evaluations gained less than `min_gain` points over
    /// the best score before them.
    pub fn stopped_improving(&self) -> bool {
        let (p, e) = (self.config.patience, &self.evals);
        if p == 0 || e.len() <= p {
            return false;
        }
        let best = |s: &[EvalPoint]| s.iter().map(|x| x.score).fold(f64::MIN, f64::max);
        let split = e.len() - p;
        best(&e[split..]) - best(&e[..split]) < self.config.min_gain
    }

    fn lr(&self) -> f64 {
        let cfg = &self.config;
        let warm = ((self.step + 1) as f64 / cfg.warmup.max(1) as f64).min(1.0);
        let decay_from = self
            .decay_from
            .unwrap_or(cfg.max_steps.saturating_sub(cfg.decay_steps));
        let decay = if self.step >= decay_from && cfg.decay_steps > 0 {
            let f = ((self.step - decay_from) as f64 / cfg.decay_steps as f64).min(1.0);
            1.0 - 0.9 * f
        } else {
            1.0
        };
        cfg.lr * warm * decay
    }
}

/// Writes a loadable model directory (weights, config, tokenizer, state, and
/// `prm.json` for a step-label model).
pub fn save_model_dir(
    dir: &Path,
    varmap: &VarMap,
    shape: &ModelShape,
    vocab: &Vocab,
    state: &TrainState,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if let Objective::StepLabels { chain, .. } = state.config.objective {
        let prm = crate::train::prm_data::prm_config(chain);
        std::fs::write(dir.join("prm.json"), serde_json::to_string_pretty(&prm)?)?;
    }
    let tmp = dir.join("model.safetensors.tmp");
    varmap.save(&tmp)?;
    std::fs::rename(&tmp, dir.join("model.safetensors"))?;
    let config = shape.hf_config(vocab.id(EOS)?);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    vocab
        .tokenizer()
        .save(dir.join("tokenizer.json"), false)
        .map_err(anyhow::Error::msg)?;
    write_state(dir, state)
}

fn write_state(dir: &Path, state: &TrainState) -> Result<()> {
    let tmp = dir.join("train_state.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(state)?)?;
    std::fs::rename(&tmp, dir.join("train_state.json"))?;
    Ok(())
}

/// Draws the batch of about `budget` tokens for one step from that step's seeded RNG.
pub type BatchFn<'a> = dyn FnMut(&mut rand_chacha::ChaCha8Rng, usize) -> Result<Vec<Encoded>> + 'a;

/// Scores a checkpoint directory on held-out data, in points (higher is better).
pub type EvalFn<'a> = dyn FnMut(&Path) -> Result<f64> + 'a;

/// What [`train`] needs besides its configuration.
pub struct TrainHooks<'a> {
    /// The next batch, from an RNG seeded by step (prompt, target pairs encoded).
    pub next_batch: &'a mut BatchFn<'a>,
    /// Scores a checkpoint directory on held-out data, in points (higher is better).
    pub evaluate: Option<&'a mut EvalFn<'a>>,
}

/// Trains until the schedule ends (see the module docs); checkpoints into
/// `<out>/checkpoint` and writes the final model into `<out>`. Appends progress to
/// `<out>/train.log`.
pub fn train(cfg: TrainConfig, resume: bool, hooks: TrainHooks<'_>) -> Result<TrainState> {
    let TrainHooks {
        next_batch,
        mut evaluate,
    } = hooks;
    let dev = Device::Cpu;
    let vocab = Vocab::new()?;
    anyhow::ensure!(
        cfg.shape.vocab == vocab.size(),
        "shape.vocab must be {}",
        vocab.size()
    );
    anyhow::ensure!(
        cfg.eval_every == 0 || cfg.eval_every.is_multiple_of(cfg.checkpoint_every),
        "--eval-every must be a multiple of --checkpoint-every"
    );
    let varmap = VarMap::new();
    let model = TrainLlama::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        cfg.shape,
    )?;
    let ckpt = cfg.out.join("checkpoint");
    let mut state = TrainState {
        step: 0,
        config: cfg.clone(),
        seconds: 0.0,
        tokens: 0,
        decay_from: None,
        evals: vec![],
    };
    super::model::seeded_init(&varmap, cfg.seed)?;
    if let Some(init) = &cfg.init_from {
        let mut vm = varmap.clone();
        vm.load(init.join("model.safetensors"))
            .with_context(|| format!("loading initial weights from {}", init.display()))?;
    }
    let mut opt = AdamW::new(&varmap, AdamWParams::default())?;
    if resume && ckpt.join("train_state.json").is_file() {
        let mut vm = varmap.clone();
        vm.load(ckpt.join("model.safetensors"))
            .context("loading the checkpoint weights")?;
        opt.load(&ckpt.join("optimizer.safetensors"))?;
        let saved: TrainState =
            serde_json::from_str(&std::fs::read_to_string(ckpt.join("train_state.json"))?)?;
        anyhow::ensure!(
            saved.config.shape == cfg.shape,
            "checkpoint has a different model shape"
        );
        anyhow::ensure!(
            saved.config.mix == cfg.mix,
            "checkpoint trained on another question stream (--contract-share {}): resume \
             with the same one",
            saved.config.mix.contract_share
        );
        // The schedule settings may be changed on resume (e.g. a later max_steps); the
        // progress is the checkpoint's.
        state = TrainState {
            config: cfg.clone(),
            ..saved
        };
    }
    std::fs::create_dir_all(&cfg.out)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.out.join("train.log"))?;
    writeln!(
        log,
        "start at step {} (cap {}, {:?})",
        state.step, cfg.max_steps, cfg.shape
    )?;
    let pad = vocab.id(EOS)?;
    let save = |state: &TrainState, opt: &AdamW, dir: &Path| -> Result<()> {
        save_model_dir(dir, &varmap, &cfg.shape, &vocab, state)?;
        opt.save(&dir.join("optimizer.safetensors"))
    };
    let (mut window_loss, mut window_tokens, mut window_start) = (0f64, 0u64, Instant::now());
    loop {
        // An evaluation is due at this step (also right after a resume that stopped
        // between the checkpoint and its evaluation).
        let eval_due = cfg.eval_every > 0
            && state.step > 0
            && state.step.is_multiple_of(cfg.eval_every)
            && state.evals.last().is_none_or(|e| e.step < state.step);
        if let (true, Some(eval)) = (eval_due, evaluate.as_mut()) {
            let t = Instant::now();
            let score = eval(&ckpt)?;
            state.evals.push(EvalPoint {
                step: state.step,
                score,
                tokens: state.tokens,
            });
            writeln!(
                log,
                "eval at step {}: {score:.2} ({:.0}s)",
                state.step,
                t.elapsed().as_secs_f64()
            )?;
            if state.decay_from.is_none()
                && state.step >= cfg.min_steps
                && state.stopped_improving()
            {
                state.decay_from = Some(state.step);
                writeln!(log, "stopped improving: decay from step {}", state.step)?;
            }
            write_state(&ckpt, &state)?;
        }
        if state.step >= state.end_step() {
            break;
        }
        let step = state.step;
        let mut rng = step_rng(cfg.seed, step as u64);
        let batch: Vec<Encoded> = next_batch(&mut rng, cfg.batch_tokens)?;
        let t0 = Instant::now();
        let loss = match cfg.objective {
            Objective::NextToken => {
                let (inputs, targets, mask) = collate(&batch, pad, &dev)?;
                masked_cross_entropy(&model.forward(&inputs)?, &targets, &mask)?
            }
            Objective::StepLabels {
                positive, negative, ..
            } => step_label_loss(&model, &batch, pad, positive, negative, &dev)?,
        };
        let lr = state.lr();
        opt.backward_step(&loss, lr)?;
        state.seconds += t0.elapsed().as_secs_f64();
        // Real tokens (padding excluded), the figure throughput is reported in.
        let tokens = batch.iter().map(|e| e.ids.len() as u64).sum::<u64>();
        state.tokens += tokens;
        window_loss += loss.to_scalar::<f32>()? as f64;
        window_tokens += tokens;
        state.step += 1;
        if state.step.is_multiple_of(10) {
            let secs = window_start.elapsed().as_secs_f64();
            writeln!(
                log,
                "step {} loss {:.4} lr {:.2e} {:.0} tok/s total {:.1}M tokens {:.0}s",
                state.step,
                window_loss / 10.0,
                lr,
                window_tokens as f64 / secs,
                state.tokens as f64 / 1e6,
                state.seconds
            )?;
            (window_loss, window_tokens, window_start) = (0.0, 0, Instant::now());
        }
        if state.step.is_multiple_of(cfg.checkpoint_every) || state.step >= state.end_step() {
            save(&state, &opt, &ckpt)?;
            writeln!(log, "checkpoint at step {}", state.step)?;
        }
        if cfg.milestone_every > 0 && state.step.is_multiple_of(cfg.milestone_every) {
            let dir = cfg
                .out
                .join("milestones")
                .join(format!("step-{:06}", state.step));
            save(&state, &opt, &dir)?;
        }
    }
    save_model_dir(&cfg.out, &varmap, &cfg.shape, &vocab, &state)?;
    writeln!(
        log,
        "done: {} steps, {:.1}M tokens, {:.0}s",
        state.step,
        state.tokens as f64 / 1e6,
        state.seconds
    )?;
    Ok(state)
}

/// The data stream's generator at `step` of a run seeded `seed`: batches depend only on
/// (seed, step), which is what makes a resumed run draw the data an uninterrupted one
/// would (and lets the report redraw the training questions to count overlaps).
pub fn step_rng(seed: u64, step: u64) -> rand_chacha::ChaCha8Rng {
    rand::SeedableRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9).wrapping_add(step))
}
