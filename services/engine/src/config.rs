//! The architecture hyper-parameters the forward pass needs, read either from a
//! Hugging Face `config.json` or from GGUF metadata, so one model implementation
//! serves both file formats.

use crate::error::{EngineError, Result};
use candle_core::quantized::gguf_file;
use serde::Deserialize;

/// The decoder families we run. Qwen2 differs from Llama only in having biases
/// on the q/k/v projections, which [`ModelConfig::attention_bias`] captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// How rotary embeddings pair up the dimensions of a head.
///
/// Hugging Face checkpoints rotate (x[i], x[i + d/2]) pairs. llama.cpp's converter
/// permutes Llama q/k weights so that GGUF Llama files rotate adjacent pairs
/// (x[2i], x[2i+1]) instead; Qwen2 GGUF files keep the half-split layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    HalfSplit,
    Interleaved,
}

/// Llama 3.x frequency scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    /// Rough parameter count of the decoder, used for FLOP estimates (2 x params x tokens).
    pub fn num_parameters(&self) -> u64 {
        let h = self.hidden_size as u64;
        let kv = (self.num_kv_heads * self.head_dim) as u64;
        let q = (self.num_heads * self.head_dim) as u64;
        let per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size as u64 + 2 * h;
        let embed = self.vocab_size as u64 * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        per_layer * self.num_layers as u64 + embed + head + h
    }

    fn validate(self) -> Result<Self> {
        let fail = |m: String| Err(EngineError::load(m));
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return fail(format!(
                "num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return fail(format!(
                "head_dim must be even and positive, got {}",
                self.head_dim
            ));
        }
        if self.num_layers == 0 || self.hidden_size == 0 || self.vocab_size == 0 {
            return fail("config has zero layers, hidden size or vocabulary".into());
        }
        Ok(self)
    }

    /// Parses a Hugging Face `config.json` (model_type `llama` or `qwen2`).
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let raw: HfConfig = serde_json::from_str(text).map_err(|e| {
            EngineError::load(format!("config.json is not a valid model config: {e}"))
        })?;
        let arch = match raw.model_type.as_deref() {
            Some("llama") | Some("mistral") => Arch::Llama,
            Some("qwen2") => Arch::Qwen2,
            other => {
                return Err(EngineError::load(format!(
                    "unsupported model_type {other:?} in config.json; supported: llama, qwen2"
                )))
            }
        };
        let rope_scaling = match raw.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let kind = v
                    .get("rope_type")
                    .or_else(|| v.get("type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                match kind {
                    "llama3" => Some(serde_json::from_value(v.clone()).map_err(|e| {
                        EngineError::load(format!("bad llama3 rope_scaling in config.json: {e}"))
                    })?),
                    "default" => None,
                    other => {
                        return Err(EngineError::load(format!(
                            "unsupported rope_scaling type {other:?}; supported: llama3"
                        )))
                    }
                }
            }
        };
        let num_heads = raw.num_attention_heads;
        let eos_token_ids = match raw.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
            _ => vec![],
        };
        ModelConfig {
            arch,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
            head_dim: raw.head_dim.unwrap_or(raw.hidden_size / num_heads.max(1)),
            vocab_size: raw.vocab_size,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: raw.rope_theta.unwrap_or(10_000.0),
            rope_style: RopeStyle::HalfSplit,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: arch == Arch::Qwen2 || raw.attention_bias.unwrap_or(false),
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
        }
        .validate()
    }

    /// Reads `<arch>.*` metadata from a GGUF file (architecture `llama` or `qwen2`).
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self> {
        let md = &ct.metadata;
        let arch_name = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .ok_or_else(|| EngineError::load("GGUF file has no general.architecture"))?
            .clone();
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(EngineError::load(format!(
                    "unsupported GGUF architecture {other:?}; supported: llama, qwen2"
                )))
            }
        };
        let get = |key: &str| -> Result<&gguf_file::Value> {
            md.get(&format!("{arch_name}.{key}"))
                .ok_or_else(|| EngineError::load(format!("GGUF metadata lacks {arch_name}.{key}")))
        };
        let get_usize = |key: &str| -> Result<usize> {
            get(key).and_then(|v| {
                v.to_u64()
                    .or_else(|_| v.to_u32().map(u64::from))
                    .map(|v| v as usize)
                    .map_err(|e| EngineError::load(format!("{arch_name}.{key}: {e}")))
            })
        };
        let get_f32 = |key: &str| -> Option<f32> { get(key).ok().and_then(|v| v.to_f32().ok()) };
        let hidden_size = get_usize("embedding_length")?;
        let num_heads = get_usize("attention.head_count")?;
        let num_kv_heads = get_usize("attention.head_count_kv").unwrap_or(num_heads);
        let head_dim = get_usize("attention.key_length")
            .or_else(|_| get_usize("rope.dimension_count"))
            .unwrap_or(hidden_size / num_heads.max(1));
        let token_count = md
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.len());
        let vocab_size = get_usize("vocab_size")
            .ok()
            .or(token_count)
            .or_else(|| {
                ct.tensor_infos
                    .get("token_embd.weight")
                    .map(|t| t.shape.dims()[0])
            })
            .ok_or_else(|| {
                EngineError::load("cannot determine the vocabulary size of the GGUF file")
            })?;
        let tok_id = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
        ModelConfig {
            arch,
            hidden_size,
            intermediate_size: get_usize("feed_forward_length")?,
            num_layers: get_usize("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps: get_f32("attention.layer_norm_rms_epsilon").unwrap_or(1e-6) as f64,
            rope_theta: get_f32("rope.freq_base").unwrap_or(10_000.0),
            rope_style: match arch {
                Arch::Llama => RopeStyle::Interleaved,
                Arch::Qwen2 => RopeStyle::HalfSplit,
            },
            rope_scaling: None,
            max_position_embeddings: get_usize("context_length").unwrap_or(4096),
            tie_word_embeddings: !ct.tensor_infos.contains_key("output.weight"),
            attention_bias: ct.tensor_infos.contains_key("blk.0.attn_q.bias"),
            bos_token_id: tok_id("tokenizer.ggml.bos_token_id"),
            eos_token_ids: tok_id("tokenizer.ggml.eos_token_id").into_iter().collect(),
        }
        .validate()
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f32>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_qwen2_config_with_defaults() {
        let cfg = ModelConfig::from_hf_json(
            r#"{"model_type":"qwen2","hidden_size":64,"intermediate_size":128,
                "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
                "vocab_size":100,"eos_token_id":[5,6],"tie_word_embeddings":true}"#,
        )
        .unwrap();
        assert_eq!(cfg.arch, Arch::Qwen2);
        assert!(cfg.attention_bias);
        assert_eq!(cfg.head_dim, 16);
        assert_eq!(cfg.eos_token_ids, vec![5, 6]);
    }

    #[test]
    fn rejects_unknown_architectures_by_name() {
        let err = ModelConfig::from_hf_json(
            r#"{"model_type":"gpt_neox","hidden_size":64,"intermediate_size":128,
                "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("gpt_neox"), "{err}");
    }

    #[test]
    fn rejects_heads_that_do_not_group() {
        let err = ModelConfig::from_hf_json(
            r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
                "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":3,"vocab_size":100}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("multiple"), "{err}");
    }
}
