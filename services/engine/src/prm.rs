//! Process reward model (PRM) scoring conventions, as configuration.
//!
//! Both common conventions mark the end of every step with one token and read a
//! score from the model at that token's position:
//! - token-probability PRMs (Math-Shepherd): softmax over the lm-head logits of
//!   a positive and a negative token, score = P(positive);
//! - classification-head PRMs (Qwen2.5-Math-PRM): a small MLP head over the
//!   hidden state (Linear, ReLU, ..., Linear -> 2 classes), score = P(class positive).
//!
//! A third convention needs no tag and no training as a verifier: the likelihood a
//! generator-style model gives each step, read teacher-forced (a generative verifier).
//! On a task whose solution format is deterministic, a strong model's likelihood of a
//! step says whether the step is the right one (docs/results.md).
//!
//! The convention lives in `prm.json` beside the weights (or is passed in), so a
//! new PRM needs a config file, not a code fork.

use crate::error::{EngineError, Result};
use crate::linear::Linear;
use crate::model::Transformer;
use crate::tokenizer::TextCodec;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How scores are read at a step-tag position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReadoutConfig {
    TokenProb {
        positive: String,
        negative: String,
    },
    ClassHead {
        /// Safetensors prefix of the head: `<prefix>.<i>.weight` / `.bias`, ReLU between layers.
        head_prefix: String,
        positive_index: usize,
    },
    /// No tag: a step's reading is the probability the model gives its tokens (and the
    /// separator before it), teacher-forced: P(this line | everything before it).
    Likelihood,
}

/// The contents of `prm.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrmConfig {
    /// The token placed after every step; scores are read at its positions (unused by
    /// the likelihood readout).
    #[serde(default)]
    pub step_tag: String,
    #[serde(flatten)]
    pub readout: ReadoutConfig,
    /// Text before the steps; `{question}` is replaced by the question.
    #[serde(default = "default_question_template")]
    pub question_template: String,
    /// Text appended to each step before its tag.
    #[serde(default)]
    pub step_suffix: String,
    /// Text between a tag and the next step.
    #[serde(default = "default_after_tag")]
    pub after_tag: String,
    /// How a candidate's tag readings become its step scores.
    #[serde(default, skip_serializing_if = "Chain::is_none")]
    pub chain: Chain,
    /// Other models that read every step beside this one (a verifier ensemble):
    /// directories inside this model's directory, each a Hugging Face model
    /// (`config.json`, `model.safetensors`) read with this model's tokenizer and this
    /// file's convention. Their readings of a step and this model's are combined by
    /// [`PrmConfig::combine`] before the chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// How the members' readings of one step combine (only with `members`).
    #[serde(default, skip_serializing_if = "Combine::is_product")]
    pub combine: Combine,
}

/// How an ensemble's readings of one step become the step's reading.
///
/// Why an ensemble at all: a generative verifier cannot doubt a line it would have
/// written itself, so the samples of the very model it is read from are where it is
/// weakest (docs/results.md). A second model of other weights does not share those
/// confident mistakes; a step must then convince both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The product of the readings: for the likelihood readout, the probability both
    /// models give the step (a product of experts), so either one's doubt counts in full.
    #[default]
    Product,
    /// The smallest reading: the most doubtful member decides.
    Min,
}

impl Combine {
    fn is_product(&self) -> bool {
        *self == Combine::Product
    }

    /// Combines `other`'s readings into `readings`, step by step.
    pub fn fold(self, readings: &mut [f32], other: &[f32]) {
        for (r, &o) in readings.iter_mut().zip(other) {
            *r = match self {
                Combine::Product => *r * o,
                Combine::Min => r.min(o),
            };
        }
    }
}

/// How a candidate's tag readings become its step scores.
///
/// Why a product: a PRM trained on *local* labels ("this step is the right step from
/// the expression before it") reads P(step k is right | the steps before it), and the
/// step score the strategies want is P(every step so far is right), their running
/// product. Local labels are what the checker gives exactly at the step that is wrong,
/// so they are much easier to learn than "everything so far is right", which a model
/// must carry forward from an earlier step it cannot see at its own tag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chain {
    /// Each tag's reading is the step's score (the PRM was trained on "on track" labels).
    #[default]
    None,
    /// Step k's score is the product of the readings at tags 1..=k.
    Product,
    /// Step k's score is the smallest of the readings at tags 1..=k: the weakest step so
    /// far. Unlike the product it does not fall with the number of steps, so a long
    /// solution of sure steps scores as high as a short one and a threshold means the
    /// same at every length; it keeps the product's order of the steps (the first step
    /// under a threshold is the first reading under it).
    Min,
}

impl Chain {
    fn is_none(&self) -> bool {
        *self == Chain::None
    }

    /// Step scores from one candidate's tag readings, in order.
    pub fn apply(self, mut readings: Vec<f32>) -> Vec<f32> {
        let combine: fn(f32, f32) -> f32 = match self {
            Chain::None => return readings,
            Chain::Product => |running, r| running * r,
            Chain::Min => f32::min,
        };
        let mut running = 1.0f32;
        for r in readings.iter_mut() {
            running = combine(running, *r);
            *r = running;
        }
        readings
    }
}

fn default_question_template() -> String {
    "{question}\n".into()
}
fn default_after_tag() -> String {
    "\n".into()
}

impl PrmConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text)
            .map_err(|e| EngineError::load(format!("{}: {e}", path.display())))
    }
}

enum Readout {
    TokenProb {
        positive: u32,
        negative: u32,
    },
    ClassHead {
        layers: Vec<Linear>,
        positive_index: usize,
    },
    Likelihood,
}

/// A PRM convention bound to a loaded model's vocabulary and weights.
/// An upper bound on the tokens scoring costs, for callers that must stay within a
/// token budget: `bytes(question) + prompt_overhead + sum(bytes(step) + step_overhead)`.
/// It holds for byte-level BPE, byte-fallback and character tokenizers, where every
/// token covers at least one byte of text (the +2 covers BOS-style specials, the +1 per
/// step the tag token).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrmCost {
    pub prompt_overhead: u64,
    pub step_overhead: u64,
}

pub struct Prm {
    config: PrmConfig,
    /// The step tag's id (none for the likelihood readout).
    tag: Option<u32>,
    readout: Readout,
}

/// One encoded candidate as the readout sees it: its tokens and its step marks
/// ([`Prm::encode`]).
pub type Marked<'a> = (&'a [u32], &'a [usize]);

/// What [`Prm::readings`] read in one pass.
pub struct Readings {
    /// One reading per step, candidates in order.
    pub scores: Vec<f32>,
    /// Likelihood readout only: per candidate, the log-probability of each of its tokens
    /// from the first step on (`reusable_prefix + 1..`).
    pub token_logp: Vec<Vec<f32>>,
}

/// Longest question + solution a PRM request may score, in characters.
pub const MAX_SCORE_CHARS: usize = 64 * 1024;

impl Prm {
    /// Resolves tokens and, for a class head, loads its layers from `weights` (safetensors).
    pub fn new(
        config: PrmConfig,
        codec: &TextCodec,
        weights: &[PathBuf],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let tag = match config.readout {
            ReadoutConfig::Likelihood => None,
            _ => Some(codec.single_token(&config.step_tag)?),
        };
        let readout = match &config.readout {
            ReadoutConfig::TokenProb { positive, negative } => Readout::TokenProb {
                positive: codec.single_token(positive)?,
                negative: codec.single_token(negative)?,
            },
            ReadoutConfig::ClassHead {
                head_prefix,
                positive_index,
            } => {
                if weights.is_empty() {
                    return Err(EngineError::load(
                        "a class-head PRM needs safetensors weights holding the head",
                    ));
                }
                let layers = load_head(weights, head_prefix, dtype, device)?;
                Readout::ClassHead {
                    layers,
                    positive_index: *positive_index,
                }
            }
            ReadoutConfig::Likelihood => Readout::Likelihood,
        };
        Ok(Self {
            config,
            tag,
            readout,
        })
    }

    pub fn config(&self) -> &PrmConfig {
        &self.config
    }

    /// Overheads for bounding a request's token count before it is sent (see [`PrmCost`]).
    pub fn cost(&self) -> PrmCost {
        let c = &self.config;
        PrmCost {
            prompt_overhead: c.question_template.replace("{question}", "").len() as u64 + 2,
            step_overhead: (c.step_suffix.len() + c.after_tag.len()) as u64 + 1,
        }
    }

    /// Tokens for a question and its steps, and one mark per step: the position of its
    /// tag, or for the likelihood readout the position where its span starts (the
    /// separator before it, then its text; a span ends where the next one starts).
    pub fn encode(
        &self,
        codec: &TextCodec,
        question: &str,
        steps: &[String],
    ) -> Result<(Vec<u32>, Vec<usize>)> {
        let size = question.len() + steps.iter().map(String::len).sum::<usize>();
        if size > MAX_SCORE_CHARS {
            return Err(EngineError::invalid(format!(
                "question and steps total {size} characters; the limit is {MAX_SCORE_CHARS}"
            )));
        }
        if steps.is_empty() {
            return Err(EngineError::invalid(
                "a candidate must have at least one step to score",
            ));
        }
        let mut ids = codec.encode(
            &self
                .config
                .question_template
                .replace("{question}", question),
            true,
        )?;
        if self.tag.is_none() && ids.is_empty() {
            return Err(EngineError::invalid(
                "the likelihood readout needs at least one token before the first step; \
                 give prm.json a question_template",
            ));
        }
        let mut marks = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            if self.tag.is_none() {
                marks.push(ids.len());
            }
            if i > 0 && !self.config.after_tag.is_empty() {
                ids.extend(codec.encode(&self.config.after_tag, false)?);
            }
            ids.extend(codec.encode(&format!("{step}{}", self.config.step_suffix), false)?);
            if let Some(tag) = self.tag {
                marks.push(ids.len());
                ids.push(tag);
            }
        }
        Ok((ids, marks))
    }

    /// Leading tokens of an encoded candidate whose KV may come from the prefix cache:
    /// everything before the first row the readout reads.
    pub fn reusable_prefix(&self, marks: &[usize]) -> usize {
        let first = marks.first().copied().unwrap_or(0);
        match self.readout {
            Readout::Likelihood => first.saturating_sub(1),
            _ => first,
        }
    }

    /// The first token whose log-probability the likelihood readout reads (the row
    /// before it predicts it): where a scored candidate's cached readings start.
    pub fn first_token_read(&self, marks: &[usize]) -> usize {
        self.reusable_prefix(marks) + 1
    }

    /// Whether a candidate that extends a scored one may take that one's readings from
    /// the prefix cache and run only its new tokens through the model: the likelihood
    /// readout reads each token once, at the row that predicts it, so what it read for
    /// a prefix holds for every extension (the next round of a tree search re-scores
    /// each path with one more step). Tag readouts reuse the question's KV only.
    pub fn reads_tokens(&self) -> bool {
        matches!(self.readout, Readout::Likelihood)
    }

    /// The positions whose final hidden rows the readout needs, in order: the tags, or
    /// for the likelihood readout every position that predicts a step token. Where a
    /// pass starts a candidate at position `reused`, it reads only rows from there on.
    pub fn rows(&self, (ids, marks): Marked) -> Vec<usize> {
        match self.readout {
            Readout::Likelihood => (self.reusable_prefix(marks)..ids.len() - 1).collect(),
            _ => marks.to_vec(),
        }
    }

    /// One reading per step of every candidate, in order, from `hidden`: the rows
    /// [`Prm::rows`] named for each candidate from its first computed position on,
    /// stacked in the same order (`None`: no rows). For the likelihood readout,
    /// `known[i]` holds the log-probabilities of candidate `i`'s first step tokens read
    /// in an earlier pass (from the prefix cache), and the readings come with every
    /// candidate's step-token log-probabilities, for the cache.
    pub fn readings(
        &self,
        model: &Transformer,
        hidden: Option<&Tensor>,
        candidates: &[Marked],
        known: &[&[f32]],
    ) -> Result<Readings> {
        if !matches!(self.readout, Readout::Likelihood) {
            let scores = match hidden {
                Some(rows) => self.score_rows(model, rows)?,
                None => Vec::new(),
            };
            return Ok(Readings {
                scores,
                token_logp: Vec::new(),
            });
        }
        let logp = match hidden {
            Some(rows) => {
                candle_nn::ops::log_softmax(&model.logits(rows)?, candle_core::D::Minus1)?
                    .to_dtype(DType::F32)?
                    .to_vec2::<f32>()?
            }
            None => Vec::new(),
        };
        let mut rows = logp.iter();
        let mut scores = Vec::new();
        let mut token_logps = Vec::with_capacity(candidates.len());
        for (&(ids, marks), &known) in candidates.iter().zip(known) {
            let first = self.reusable_prefix(marks);
            // logp of token p, for p in first + 1..ids.len() (row p - 1 predicts it):
            // the known ones, then one per row.
            let mut token_logp = Vec::with_capacity(ids.len().saturating_sub(first + 1));
            token_logp.extend_from_slice(known);
            for &token in ids.iter().skip(first + 1 + known.len()) {
                let row = rows.next().ok_or_else(|| {
                    EngineError::Internal("fewer likelihood rows than step tokens".into())
                })?;
                token_logp.push(row[token as usize]);
            }
            for (k, &start) in marks.iter().enumerate() {
                let end = marks.get(k + 1).copied().unwrap_or(ids.len());
                let span = &token_logp[start - first - 1..end - first - 1];
                scores.push(span.iter().sum::<f32>().exp());
            }
            token_logps.push(token_logp);
        }
        Ok(Readings {
            scores,
            token_logp: token_logps,
        })
    }

    /// Scores in [0, 1] for rows of final hidden states taken at tag positions (the tag
    /// readouts of [`Prm::readings`]).
    fn score_rows(&self, model: &Transformer, hidden: &Tensor) -> Result<Vec<f32>> {
        let probs = match &self.readout {
            Readout::TokenProb { positive, negative } => {
                let logits = model.logits(hidden)?;
                let idx = Tensor::new(&[*positive, *negative], hidden.device())?;
                let pair = logits.index_select(&idx, 1)?;
                candle_nn::ops::softmax_last_dim(&pair)?.narrow(1, 0, 1)?
            }
            Readout::ClassHead {
                layers,
                positive_index,
            } => {
                let mut x = hidden.clone();
                for (i, layer) in layers.iter().enumerate() {
                    if i > 0 {
                        x = x.relu()?;
                    }
                    x = layer.forward(&x)?;
                }
                let classes = x.dim(1)?;
                if *positive_index >= classes {
                    return Err(EngineError::load(format!(
                        "positive_index {positive_index} is out of range for a head with {classes} classes"
                    )));
                }
                candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?)?.narrow(
                    1,
                    *positive_index,
                    1,
                )?
            }
            Readout::Likelihood => {
                return Err(EngineError::Internal(
                    "the likelihood readout reads spans, not rows".into(),
                ))
            }
        };
        Ok(probs
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }
}

fn load_head(
    weights: &[PathBuf],
    prefix: &str,
    dtype: DType,
    device: &Device,
) -> Result<Vec<Linear>> {
    // SAFETY: read-only memory map of files we do not modify.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(weights)? };
    let mut indices: Vec<usize> = st
        .tensors()
        .iter()
        .filter_map(|(name, _)| {
            let rest = name.strip_prefix(prefix)?.strip_prefix('.')?;
            rest.strip_suffix(".weight")?.parse().ok()
        })
        .collect();
    indices.sort_unstable();
    if indices.is_empty() {
        return Err(EngineError::load(format!(
            "no class-head weights named {prefix}.<i>.weight in the safetensors"
        )));
    }
    let names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    indices
        .into_iter()
        .map(|i| {
            let w = st
                .load(&format!("{prefix}.{i}.weight"), device)?
                .to_dtype(dtype)?;
            let bias_name = format!("{prefix}.{i}.bias");
            let b = if names.contains(&bias_name) {
                Some(st.load(&bias_name, device)?.to_dtype(dtype)?)
            } else {
                None
            };
            Ok(Linear::dense(w, b)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_combine_readings_in_order() {
        let readings = vec![0.9, 0.5, 0.8, 0.2];
        assert_eq!(Chain::None.apply(readings.clone()), readings);
        assert_eq!(
            Chain::Product.apply(readings.clone()),
            vec![0.9, 0.45, 0.45 * 0.8, 0.45 * 0.8 * 0.2]
        );
        assert_eq!(Chain::Min.apply(readings), vec![0.9, 0.5, 0.5, 0.2]);
        let parsed: PrmConfig =
            serde_json::from_str(r#"{"kind": "likelihood", "chain": "min"}"#).unwrap();
        assert_eq!(parsed.chain, Chain::Min);
        assert!(parsed.members.is_empty());
        assert_eq!(parsed.combine, Combine::Product);
    }

    #[test]
    fn ensemble_readings_combine_step_by_step() {
        let mut product = vec![0.9, 0.5, 1.0];
        Combine::Product.fold(&mut product, &[0.5, 0.5, 0.25]);
        assert_eq!(product, vec![0.45, 0.25, 0.25]);
        let mut min = vec![0.9, 0.5, 1.0];
        Combine::Min.fold(&mut min, &[0.5, 0.75, 0.25]);
        assert_eq!(min, vec![0.5, 0.5, 0.25]);
        let parsed: PrmConfig =
            serde_json::from_str(r#"{"kind": "likelihood", "members": ["s"], "combine": "min"}"#)
                .unwrap();
        assert_eq!(parsed.members, vec!["s".to_string()]);
        assert_eq!(parsed.combine, Combine::Min);
    }
}
