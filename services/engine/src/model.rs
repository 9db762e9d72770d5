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

use crate::attention::{attend, Heads, Rotary};
use crate::config::{ModelConfig, RopeStyle};
use crate::kv::{KvCache, KvDtype};
use crate::linear::{Fused, Linear};
use crate::sampling::exp_in_place;
use candle_core::{DType, Device, Result, Tensor, D};

/// A layer's weights as the file names them, before [`Layer::new`] fuses the
/// products that read the same input.
pub struct LayerWeights {
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

pub struct Layer {
    pub attn_norm: Tensor,
    /// The q, k and v projections.
    pub qkv: Fused,
    pub o: Linear,
    pub ffn_norm: Tensor,
    /// The gate and up projections.
    pub gate_up: Fused,
    pub down: Linear,
}

impl Layer {
    pub fn new(w: LayerWeights) -> Result<Self> {
        Ok(Self {
            attn_norm: w.attn_norm,
            qkv: Fused::new(vec![w.q, w.k, w.v])?,
            o: w.o,
            ffn_norm: w.ffn_norm,
            gate_up: Fused::new(vec![w.gate, w.up])?,
            down: w.down,
        })
    }

    /// `silu(gate(h)) * up(h)`, in one pass over the fused product on the CPU.
    fn swiglu(&self, h: &Tensor) -> Result<Tensor> {
        if let Fused::One { linear, widths } = &self.gate_up {
            if h.device().is_cpu() && h.dtype() == DType::F32 {
                let ff = widths[0];
                let y = linear.forward(h)?;
                let out = crate::linear::with_cpu_f32(&y, |y| swiglu_rows(y, ff))?;
                let rows = out.len() / ff;
                return Tensor::from_vec(out, (rows, ff), h.device());
            }
        }
        let parts = self.gate_up.forward(h)?;
        candle_nn::ops::silu(&parts[0])? * &parts[1]
    }
}

/// `silu(gate) * up` for rows of `[gate | up]` (`ff` values each).
fn swiglu_rows(y: &[f32], ff: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(y.len() / 2);
    for row in y.chunks_exact(2 * ff) {
        let (gate, up) = row.split_at(ff);
        // candle's silu, x / (1 + e^-x), with e^-x from the vectorised
        // `exp_in_place` (within 2e-7 of libm's): libm's scalar `expf` here
        // was 4% of a loaded cluster's time (perf, `ponder up` at 11 q/s).
        let start = out.len();
        out.extend(gate.iter().map(|g| -g));
        exp_in_place(&mut out[start..]);
        for ((o, g), u) in out[start..].iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + *o) * u;
        }
    }
    out
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
    /// How this model's caches store keys and values ([`crate::LoadOptions::kv_cache`]).
    pub kv_dtype: KvDtype,
}

/// One sequence's share of a packed forward pass: its new tokens and its cache.
pub struct Segment<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}

/// Precomputed rotary cos/sin for every position up to the context limit.
pub struct RopeTable {
    rotary: Rotary,
    max_positions: usize,
}

/// Contexts longer than this are refused rather than tabulated (8 MB of tables).
const MAX_ROPE_POSITIONS: usize = 32_768;

impl RopeTable {
    pub fn new(cfg: &ModelConfig) -> Self {
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
        let freqs: Vec<f32> = (0..max_positions)
            .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        Self {
            rotary: Rotary {
                cos: freqs.iter().map(|x| x.cos()).collect(),
                sin: freqs.iter().map(|x| x.sin()).collect(),
                half,
                interleaved: cfg.rope_style == RopeStyle::Interleaved,
            },
            max_positions,
        }
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }
}

impl Transformer {
    /// An empty cache for one sequence of this model, in its KV dtype.
    pub fn new_cache(&self) -> KvCache {
        KvCache::with_dtype(self.config.num_layers, self.kv_dtype)
    }

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
        let eps = cfg.rms_norm_eps as f32;

        let mut x = self.embed.index_select(&ids, 0)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let attn = self.attention(li, layer, &h, &positions, segments)?;
            x = (x + layer.o.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            x = (x + layer.down.forward(&layer.swiglu(&h)?)?)?;
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
        positions: &[u32],
        segments: &mut [Segment<'_>],
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let heads = Heads {
            query: cfg.num_heads,
            kv: cfg.num_kv_heads,
            dim: cfg.head_dim,
        };
        let mut qkv = layer.qkv.forward_f32(h)?.into_iter();
        let (Some(mut q), Some(mut k), Some(v)) = (qkv.next(), qkv.next(), qkv.next()) else {
            candle_core::bail!("a layer's fused projection must give q, k and v")
        };
        self.rope.rotary.apply(&mut q, heads.query, positions);
        self.rope.rotary.apply(&mut k, heads.kv, positions);
        let out = attend(li, heads, &q, &k, &v, segments, layer.qkv.pool())?;
        Tensor::from_vec(
            out,
            (positions.len(), heads.query * heads.dim),
            &Device::Cpu,
        )?
        .to_device(&self.device)?
        .to_dtype(self.dtype)
    }
}

/// Index of the largest value in each row (greedy decoding, tests).
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    logits.argmax(D::Minus1)?.to_vec1::<u32>()
}
