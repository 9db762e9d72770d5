//! The decoder forward pass (Llama and Qwen2), written for serving.
//!
//! Why our own forward instead of candle-transformers' models: those return only
//! the last position's logits and keep one cache per model, while we need
//! (a) hidden states at every position for PRM scoring, (b) many sequences of
//! unequal length in one pass, and (c) per-sequence copy-on-write caches.
//!
//! Batching is *packed* (varlen): the new tokens of every sequence are
//! concatenated into one (tokens, hidden) matrix, so each linear layer reads its
//! weights once per pass for the whole batch, and attention runs per sequence
//! against that sequence's own cache. Nothing is padded, so a sequence's output
//! cannot depend on its batch-mates.

use crate::config::{ModelConfig, RopeStyle};
use crate::kv::KvCache;
use crate::linear::Linear;
use candle_core::{DType, Device, Result, Tensor, D};

pub struct Layer {
    pub attn_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

pub struct Transformer {
    pub config: ModelConfig,
    /// (vocab, hidden) in the compute dtype.
    pub embed: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    pub lm_head: Linear,
    pub rope: RopeTable,
    pub device: Device,
    pub dtype: DType,
}

/// One sequence's share of a packed forward pass: its new tokens and its cache.
pub struct Segment<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}

/// Precomputed rotary cos/sin for every position up to the context limit.
pub struct RopeTable {
    cos: Tensor,
    sin: Tensor,
    max_positions: usize,
}

/// Contexts longer than this are refused rather than tabulated (8 MB of tables).
const MAX_ROPE_POSITIONS: usize = 32_768;

impl RopeTable {
    pub fn new(cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let max_positions = cfg.max_position_embeddings.clamp(1, MAX_ROPE_POSITIONS);
        let mut inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / cfg.head_dim as f32))
            .collect();
        if let Some(s) = cfg.rope_scaling {
            // Llama 3.x: slow down low frequencies, keep high ones, blend between.
            let old = s.original_max_position_embeddings as f32;
            let low_wavelen = old / s.low_freq_factor;
            let high_wavelen = old / s.high_freq_factor;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f32::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= s.factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (old / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                }
            }
        }
        let inv = Tensor::from_vec(inv_freq, (1, half), device)?;
        let pos = Tensor::arange(0u32, max_positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_positions, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok(Self {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
            max_positions,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }
}

impl Transformer {
    /// Runs the new tokens of every segment through the model, appending to each
    /// segment's cache, and returns the final-norm hidden states of all new
    /// tokens in packed order: (total_new_tokens, hidden).
    pub fn forward(&self, segments: &mut [Segment<'_>]) -> Result<Tensor> {
        let cfg = &self.config;
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        for seg in segments.iter() {
            if seg.tokens.is_empty() {
                candle_core::bail!("a segment with no new tokens cannot be forwarded")
            }
            let start = seg.cache.len();
            if start + seg.tokens.len() > self.rope.max_positions {
                candle_core::bail!(
                    "sequence of {} tokens exceeds the model's context of {}",
                    start + seg.tokens.len(),
                    self.rope.max_positions
                )
            }
            ids.extend_from_slice(seg.tokens);
            positions.extend((start..start + seg.tokens.len()).map(|p| p as u32));
        }
        let total = ids.len();
        let ids = Tensor::from_vec(ids, total, &self.device)?;
        let positions = Tensor::from_vec(positions, total, &self.device)?;
        let cos = self.rope.cos.index_select(&positions, 0)?;
        let sin = self.rope.sin.index_select(&positions, 0)?;
        let eps = cfg.rms_norm_eps as f32;

        let mut x = self.embed.index_select(&ids, 0)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let attn = self.attention(li, layer, &h, &cos, &sin, segments)?;
            x = (x + layer.o.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let gated =
                (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&gated)?)?;
        }
        for seg in segments.iter_mut() {
            seg.cache.advance(seg.tokens.len());
        }
        candle_nn::ops::rms_norm(&x, &self.norm, eps)
    }

    /// Vocabulary logits for rows of final hidden states: (rows, hidden) -> (rows, vocab) f32.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)?.to_dtype(DType::F32)
    }

    fn attention(
        &self,
        li: usize,
        layer: &Layer,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &mut [Segment<'_>],
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (total, _) = h.dims2()?;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let groups = nh / nkv;
        // (tokens, heads*dim) -> (1, heads, tokens, dim) as the rope kernels want.
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            t.reshape((total, n, hd))?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)
        };
        let rope = |t: &Tensor| match cfg.rope_style {
            RopeStyle::HalfSplit => candle_nn::rotary_emb::rope(t, cos, sin),
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(t, cos, sin),
        };
        let q = rope(&heads(layer.q.forward(h)?, nh)?)?.squeeze(0)?;
        let k = rope(&heads(layer.k.forward(h)?, nkv)?)?.squeeze(0)?;
        let v = heads(layer.v.forward(h)?, nkv)?.squeeze(0)?;
        let scale = 1.0 / (hd as f64).sqrt();

        let mut outputs = Vec::with_capacity(segments.len());
        let mut offset = 0;
        for seg in segments.iter_mut() {
            let t = seg.tokens.len();
            let (keys, values) =
                seg.cache
                    .append(li, &k.narrow(1, offset, t)?, &v.narrow(1, offset, t)?)?;
            let len = keys.dim(1)?;
            // Query heads of one KV group are stacked as rows: (kv, groups*t, dim).
            let q_seg = q
                .narrow(1, offset, t)?
                .contiguous()?
                .reshape((nkv, groups * t, hd))?;
            let mut scores = (q_seg.matmul(&keys.t()?)? * scale)?;
            if t > 1 {
                scores = scores.broadcast_add(&causal_mask(
                    groups,
                    t,
                    len,
                    scores.dtype(),
                    &self.device,
                )?)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            outputs.push(probs.matmul(&values)?.reshape((nh, t, hd))?);
            offset += t;
        }
        let out = if outputs.len() == 1 {
            outputs.pop().expect("one")
        } else {
            Tensor::cat(&outputs, 1)?
        };
        out.transpose(0, 1)?.reshape((total, nh * hd))
    }
}

/// Additive mask for `t` new queries (repeated for `groups` heads) over `len`
/// keys, of which the first `len - t` are the cached past.
fn causal_mask(groups: usize, t: usize, len: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let past = len - t;
    let mask: Vec<f32> = (0..groups * t)
        .flat_map(|row| {
            let limit = past + row % t;
            (0..len).map(move |col| if col <= limit { 0.0 } else { f32::NEG_INFINITY })
        })
        .collect();
    Tensor::from_vec(mask, (groups * t, len), dev)?.to_dtype(dtype)
}

/// Index of the largest value in each row (greedy decoding, tests).
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    logits.argmax(D::Minus1)?.to_vec1::<u32>()
}
