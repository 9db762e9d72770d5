//! The training loop: seeded batches, masked cross-entropy, AdamW with warm-up
//! and cosine decay, checkpoints that are loadable model directories, resume.
//!
//! Why checkpoints are plain model directories: a session's processes end with
//! it, so training runs for hours across sessions. Every checkpoint is a
//! complete Hugging Face layout (`config.json`, `model.safetensors`,
//! `tokenizer.json`) plus `train_state.json` (the step reached); `--resume`
//! continues from it with the same data stream (batches are seeded by step).
//! AdamW moments are not saved (candle-nn does not expose them), so a resumed
//! run re-warms its learning rate over a few steps.

use super::model::{ModelShape, TrainLlama};
use crate::vocab::{Vocab, EOS};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
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
    StepLabels { positive: u32, negative: u32 },
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
    pub steps: usize,
    /// Characters (= tokens) per batch; examples are added until it is reached.
    pub batch_tokens: usize,
    pub lr: f64,
    pub warmup: usize,
    pub seed: u64,
    pub checkpoint_every: usize,
    /// Start from these weights (a model directory) instead of a seeded init.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Absent in checkpoints written before PRM training existed: those were generators.
    #[serde(default)]
    pub objective: Objective,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub step: usize,
    pub config: TrainConfig,
    /// Wall-clock seconds spent training, summed over sessions.
    pub seconds: f64,
    pub tokens: u64,
}

fn lr_at(cfg: &TrainConfig, step: usize, resumed_at: Option<usize>) -> f64 {
    let warm = |since: usize| ((step - since + 1) as f64 / cfg.warmup.max(1) as f64).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / cfg.steps as f64).cos());
    let base = cfg.lr * (0.1 + 0.9 * cosine);
    base * warm(resumed_at.unwrap_or(0))
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
    if let Objective::StepLabels { .. } = state.config.objective {
        std::fs::create_dir_all(dir)?;
        let prm = crate::train::prm_data::prm_config();
        std::fs::write(dir.join("prm.json"), serde_json::to_string_pretty(&prm)?)?;
    }
    std::fs::create_dir_all(dir)?;
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
    std::fs::write(
        dir.join("train_state.json"),
        serde_json::to_string_pretty(state)?,
    )?;
    Ok(())
}

/// Trains on batches from `next_batch(rng, batch_tokens)` (prompt, target pairs); checkpoints into `<out>/checkpoint`
/// and writes the final model into `<out>`. Appends progress to `<out>/train.log`.
pub fn train(
    cfg: TrainConfig,
    resume: bool,
    mut next_batch: impl FnMut(&mut rand_chacha::ChaCha8Rng, usize) -> Result<Vec<Encoded>>,
) -> Result<TrainState> {
    use rand::SeedableRng;
    let dev = Device::Cpu;
    let vocab = Vocab::new()?;
    anyhow::ensure!(
        cfg.shape.vocab == vocab.size(),
        "shape.vocab must be {}",
        vocab.size()
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
    };
    let mut resumed_at = None;
    super::model::seeded_init(&varmap, cfg.seed)?;
    if let Some(init) = &cfg.init_from {
        let mut vm = varmap.clone();
        vm.load(init.join("model.safetensors"))
            .with_context(|| format!("loading initial weights from {}", init.display()))?;
    }
    if resume && ckpt.join("train_state.json").is_file() {
        let mut vm = varmap.clone();
        vm.load(ckpt.join("model.safetensors"))
            .context("loading the checkpoint weights")?;
        let saved: TrainState =
            serde_json::from_str(&std::fs::read_to_string(ckpt.join("train_state.json"))?)?;
        anyhow::ensure!(
            saved.config.shape == cfg.shape,
            "checkpoint has a different model shape"
        );
        state.step = saved.step;
        state.seconds = saved.seconds;
        state.tokens = saved.tokens;
        resumed_at = Some(saved.step);
    }
    let params = ParamsAdamW {
        lr: cfg.lr,
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut opt = AdamW::new(varmap.all_vars(), params)?;
    std::fs::create_dir_all(&cfg.out)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.out.join("train.log"))?;
    writeln!(
        log,
        "start at step {} of {} ({:?})",
        state.step, cfg.steps, cfg.shape
    )?;
    let pad = vocab.id(EOS)?;
    let (mut window_loss, mut window_tokens, mut window_start) = (0f64, 0u64, Instant::now());
    while state.step < cfg.steps {
        let step = state.step;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            cfg.seed.wrapping_mul(0x9E37_79B9).wrapping_add(step as u64),
        );
        let batch: Vec<Encoded> = next_batch(&mut rng, cfg.batch_tokens)?;
        let t0 = Instant::now();
        let loss = match cfg.objective {
            Objective::NextToken => {
                let (inputs, targets, mask) = collate(&batch, pad, &dev)?;
                masked_cross_entropy(&model.forward(&inputs)?, &targets, &mask)?
            }
            Objective::StepLabels { positive, negative } => {
                step_label_loss(&model, &batch, pad, positive, negative, &dev)?
            }
        };
        opt.set_learning_rate(lr_at(&cfg, step, resumed_at));
        opt.backward_step(&loss)?;
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
                lr_at(&cfg, step, resumed_at),
                window_tokens as f64 / secs,
                state.tokens as f64 / 1e6,
                state.seconds
            )?;
            (window_loss, window_tokens, window_start) = (0.0, 0, Instant::now());
        }
        if state.step.is_multiple_of(cfg.checkpoint_every) || state.step == cfg.steps {
            save_model_dir(&ckpt, &varmap, &cfg.shape, &vocab, &state)?;
            writeln!(log, "checkpoint at step {}", state.step)?;
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
