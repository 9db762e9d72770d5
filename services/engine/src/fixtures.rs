//! Tiny randomly initialised models in Hugging Face layout, written to disk.
//!
//! Why in the library: tests of every crate (engine, services, cluster) need
//! real models that load through the real path in milliseconds. These are
//! real Llama/Qwen2 checkpoints with random weights and a character-level
//! tokenizer; their text is gibberish, their numerics are not.

use crate::char_tokenizer::char_tokenizer;
use crate::config::Arch;
use crate::error::{EngineError, Result};
use crate::prm::{PrmConfig, ReadoutConfig};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct TinySpec {
    pub arch: Arch,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub tie_embeddings: bool,
    /// Also write a 2-layer classification head `score.0`/`score.2` and a
    /// class-head `prm.json`.
    pub class_head: bool,
    /// Write a token-probability `prm.json` (tag `<tag>`, positive `+`, negative `-`).
    pub token_prob_prm: bool,
    pub seed: u64,
}

impl TinySpec {
    pub fn llama() -> Self {
        Self {
            arch: Arch::Llama,
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            intermediate: 128,
            tie_embeddings: false,
            class_head: false,
            token_prob_prm: false,
            seed: 1,
        }
    }

    pub fn qwen2() -> Self {
        Self {
            arch: Arch::Qwen2,
            tie_embeddings: true,
            seed: 2,
            ..Self::llama()
        }
    }
}

/// Deterministic N(0, std) weights from a seeded generator (candle's CPU randn is not seedable).
struct Init(u64);
impl Init {
    fn tensor(&mut self, shape: &[usize], std: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            // Box-Muller over a 64-bit LCG.
            let mut uni = || {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let (u1, u2) = (uni(), uni());
            let r = (-2.0 * u1.ln()).sqrt();
            v.push((r * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std);
            v.push((r * (2.0 * std::f64::consts::PI * u2).sin()) as f32 * std);
        }
        v.truncate(n);
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }
}

/// Writes `config.json`, `model.safetensors`, `tokenizer.json` (and `prm.json` when asked) into `dir`.
pub fn write_tiny_model(dir: &Path, spec: &TinySpec) -> Result<()> {
    let io = |source| EngineError::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tokenizer = char_tokenizer()?;
    let vocab = tokenizer.get_vocab_size(true);
    let hd = spec.hidden / spec.heads;
    let config = serde_json::json!({
        "model_type": spec.arch.name(),
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": spec.tie_embeddings,
        "bos_token_id": 1,
        "eos_token_id": 2,
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).expect("json"),
    )
    .map_err(io)?;
    let mut init = Init(spec.seed);
    let mut w: HashMap<String, Tensor> = HashMap::new();
    let (h, kv) = (spec.hidden, spec.kv_heads * hd);
    w.insert(
        "model.embed_tokens.weight".into(),
        init.tensor(&[vocab, h], 0.5)?,
    );
    for i in 0..spec.layers {
        let p = format!("model.layers.{i}");
        let mut put = |name: &str, shape: &[usize], std: f32| -> Result<()> {
            w.insert(format!("{p}.{name}"), init.tensor(shape, std)?);
            Ok(())
        };
        put("self_attn.q_proj.weight", &[h, h], 0.15)?;
        put("self_attn.k_proj.weight", &[kv, h], 0.15)?;
        put("self_attn.v_proj.weight", &[kv, h], 0.15)?;
        put("self_attn.o_proj.weight", &[h, h], 0.15)?;
        if spec.arch == Arch::Qwen2 {
            put("self_attn.q_proj.bias", &[h], 0.1)?;
            put("self_attn.k_proj.bias", &[kv], 0.1)?;
            put("self_attn.v_proj.bias", &[kv], 0.1)?;
        }
        put("mlp.gate_proj.weight", &[spec.intermediate, h], 0.15)?;
        put("mlp.up_proj.weight", &[spec.intermediate, h], 0.15)?;
        put("mlp.down_proj.weight", &[h, spec.intermediate], 0.15)?;
        w.insert(
            format!("{p}.input_layernorm.weight"),
            (init.tensor(&[h], 0.1)? + 1.0)?,
        );
        w.insert(
            format!("{p}.post_attention_layernorm.weight"),
            (init.tensor(&[h], 0.1)? + 1.0)?,
        );
    }
    w.insert("model.norm.weight".into(), (init.tensor(&[h], 0.1)? + 1.0)?);
    if !spec.tie_embeddings {
        w.insert("lm_head.weight".into(), init.tensor(&[vocab, h], 0.3)?);
    }
    if spec.class_head {
        w.insert("score.0.weight".into(), init.tensor(&[h, h], 0.3)?);
        w.insert("score.0.bias".into(), init.tensor(&[h], 0.1)?);
        w.insert("score.2.weight".into(), init.tensor(&[2, h], 0.3)?);
        w.insert("score.2.bias".into(), init.tensor(&[2], 0.1)?);
    }
    candle_core::safetensors::save(&w, dir.join("model.safetensors"))?;
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| EngineError::load(format!("writing tokenizer.json: {e}")))?;
    let prm = if spec.class_head {
        Some(ReadoutConfig::ClassHead {
            head_prefix: "score".into(),
            positive_index: 1,
        })
    } else if spec.token_prob_prm {
        Some(ReadoutConfig::TokenProb {
            positive: "+".into(),
            negative: "-".into(),
        })
    } else {
        None
    };
    if let Some(readout) = prm {
        let cfg = PrmConfig {
            step_tag: "<tag>".into(),
            readout,
            question_template: "Q: {question}\n".into(),
            step_suffix: String::new(),
            after_tag: "\n".into(),
            chain: Default::default(),
            members: vec![],
            combine: Default::default(),
        };
        std::fs::write(
            dir.join("prm.json"),
            serde_json::to_string_pretty(&cfg).expect("json"),
        )
        .map_err(io)?;
    }
    Ok(())
}

/// The largest |a - b| over two sets of logit rows of the same shape.
pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
