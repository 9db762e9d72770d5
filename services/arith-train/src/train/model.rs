//! The Llama forward used for training, written with differentiable ops only.
//!
//! Why not the engine's forward: it uses fused kernels (rms_norm, rope,
//! softmax_last_dim) that have no backward pass in candle-nn 0.11; training
//! through them silently leaves every parameter but `lm_head` without a gradient.
//! Here rms_norm and rotary embeddings are plain tensor ops and the masked softmax is
//! our fused op with a backward pass ([`super::causal_softmax`]). Parameter
//! names are the Hugging Face ones, so the `VarMap` saves straight to a
//! `model.safetensors` that the engine loads (a test checks both forwards agree).

use super::causal_softmax::causal_softmax;
use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Embedding, Init, Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

/// Architecture numbers of a bundled model (Llama, full multi-head attention).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub rope_theta: f32,
}

const RMS_EPS: f64 = 1e-5;

impl ModelShape {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Reads the shape back from a `config.json` this module wrote.
    pub fn from_hf_config(path: &std::path::Path) -> anyhow::Result<Self> {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let get = |k: &str| -> anyhow::Result<usize> {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| anyhow::anyhow!("{} lacks {k}", path.display()))
        };
        Ok(Self {
            hidden: get("hidden_size")?,
            layers: get("num_hidden_layers")?,
            heads: get("num_attention_heads")?,
            intermediate: get("intermediate_size")?,
            vocab: get("vocab_size")?,
            max_positions: get("max_position_embeddings")?,
            rope_theta: v
                .get("rope_theta")
                .and_then(|x| x.as_f64())
                .unwrap_or(10_000.0) as f32,
        })
    }

    /// The Hugging Face `config.json` for this shape.
    pub fn hf_config(&self, eos_token_id: u32) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.heads,
            "vocab_size": self.vocab,
            "rms_norm_eps": RMS_EPS,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_positions,
            "tie_word_embeddings": false,
            "eos_token_id": eos_token_id,
            "torch_dtype": "float32",
        })
    }
}

struct Block {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct TrainLlama {
    shape: ModelShape,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
}

fn linear(vb: &VarBuilder, name: &str, inp: usize, out: usize) -> Result<Linear> {
    let std = (1.0 / inp as f64).sqrt();
    let w = vb.get_with_hints(
        (out, inp),
        &format!("{name}.weight"),
        Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    )?;
    Ok(Linear::new(w, None))
}

fn ones(vb: &VarBuilder, name: &str, n: usize) -> Result<Tensor> {
    vb.get_with_hints(n, name, Init::Const(1.0))
}

impl TrainLlama {
    /// Creates (or, from a loaded `VarMap`, reuses) the parameters under their HF names.
    pub fn new(vb: VarBuilder, shape: ModelShape) -> Result<Self> {
        let h = shape.hidden;
        let embed_w = vb.get_with_hints(
            (shape.vocab, h),
            "model.embed_tokens.weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        let mut blocks = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let p = format!("model.layers.{i}");
            blocks.push(Block {
                attn_norm: ones(&vb, &format!("{p}.input_layernorm.weight"), h)?,
                q: linear(&vb, &format!("{p}.self_attn.q_proj"), h, h)?,
                k: linear(&vb, &format!("{p}.self_attn.k_proj"), h, h)?,
                v: linear(&vb, &format!("{p}.self_attn.v_proj"), h, h)?,
                o: linear(&vb, &format!("{p}.self_attn.o_proj"), h, h)?,
                ffn_norm: ones(&vb, &format!("{p}.post_attention_layernorm.weight"), h)?,
                gate: linear(&vb, &format!("{p}.mlp.gate_proj"), h, shape.intermediate)?,
                up: linear(&vb, &format!("{p}.mlp.up_proj"), h, shape.intermediate)?,
                down: linear(&vb, &format!("{p}.mlp.down_proj"), shape.intermediate, h)?,
            });
        }
        let norm = ones(&vb, "model.norm.weight", h)?;
        let lm_head = linear(&vb, "lm_head", h, shape.vocab)?;
        let (cos, sin) = rope_tables(&shape, vb.device())?;
        Ok(Self {
            shape,
            embed: Embedding::new(embed_w, h),
            blocks,
            norm,
            lm_head,
            cos,
            sin,
        })
    }

    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// Final-norm hidden states: ids (batch, time) -> (batch, time, hidden).
    pub fn hidden(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let mut x = self.embed.forward(ids)?;
        for block in &self.blocks {
            let h = candle_nn::ops::rms_norm_slow(&x, &block.attn_norm, RMS_EPS as f32)?;
            x = (&x + self.attention(block, &h, &cos, &sin)?)?;
            let h = candle_nn::ops::rms_norm_slow(&x, &block.ffn_norm, RMS_EPS as f32)?;
            let mlp = block
                .down
                .forward(&(block.gate.forward(&h)?.silu()? * block.up.forward(&h)?)?)?;
            x = (x + mlp)?;
        }
        candle_nn::ops::rms_norm_slow(&x, &self.norm, RMS_EPS as f32)
    }

    /// Logits: ids (batch, time) -> (batch, time, vocab).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(&self.hidden(ids)?)
    }

    fn attention(&self, block: &Block, h: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (b, t, hidden) = h.dims3()?;
        let (nh, hd) = (self.shape.heads, self.shape.head_dim());
        let split = |x: Tensor| x.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous();
        let q = rope(&split(block.q.forward(h)?)?, cos, sin)?;
        let k = rope(&split(block.k.forward(h)?)?, cos, sin)?;
        let v = split(block.v.forward(h)?)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        let probs = causal_softmax(&scores, 1.0 / (hd as f32).sqrt())?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, hidden))?;
        block.o.forward(&out)
    }
}

/// Overwrites every parameter with seeded values: normal(0, 0.02) for the
/// embedding, normal(0, 1/sqrt(fan_in)) for matrices, ones for norms.
///
/// Why: candle's CPU random generator cannot be seeded, and training must be
/// reproducible from its command line.
pub fn seeded_init(varmap: &candle_nn::VarMap, seed: u64) -> Result<()> {
    use rand::{Rng, SeedableRng};
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (i, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let dims = var.as_tensor().dims().to_vec();
        if name.ends_with("norm.weight") {
            var.set(&Tensor::ones(dims.as_slice(), DType::F32, var.device())?)?;
            continue;
        }
        let std = if name.contains("embed_tokens") {
            0.02
        } else {
            (1.0 / dims[1] as f64).sqrt()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(i as u64);
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                // Box-Muller from two uniforms in (0, 1].
                let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
            })
            .collect();
        var.set(&Tensor::from_vec(values, dims.as_slice(), var.device())?)?;
    }
    Ok(())
}

/// cos/sin of shape (max_positions, head_dim / 2), half-split pairing as in HF Llama.
fn rope_tables(shape: &ModelShape, dev: &Device) -> Result<(Tensor, Tensor)> {
    let hd = shape.head_dim();
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / shape.rope_theta.powf(2.0 * i as f32 / hd as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, hd / 2), dev)?;
    let pos = Tensor::arange(0u32, shape.max_positions as u32, dev)?
        .to_dtype(DType::F32)?
        .reshape((shape.max_positions, 1))?;
    let freqs = pos.broadcast_mul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// Rotary embedding with plain ops: x (b, heads, t, d), cos/sin (t, d/2).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)?.add(&rotated.broadcast_mul(&sin)?)
}
