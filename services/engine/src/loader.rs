//! Loading weights from local files: a Hugging Face directory (`config.json`,
//! `model.safetensors` or a sharded index, `tokenizer.json`) or a GGUF file.
//! No hub access: a path is all we take.

use crate::config::ModelConfig;
use crate::engine::Quantize;
use crate::error::{EngineError, Result};
use crate::kv::KvDtype;
use crate::linear::Linear;
use crate::model::{Layer, LayerWeights, RopeTable, Transformer};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};

/// Where a model's files are and which format they are in.
#[derive(Debug, Clone)]
pub enum ModelFiles {
    HuggingFace { dir: PathBuf, weights: Vec<PathBuf> },
    Gguf { file: PathBuf },
}

/// Whether `rel` names a path inside a model's directory: non-empty, relative, no `..`
/// or `.`, no backslash (a manifest is read on every platform). Ensemble members and the
/// files a manifest hashes must be such paths.
pub fn is_inside_model_dir(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\\')
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

impl ModelFiles {
    /// Resolves a user-given path: a `.gguf` file, a directory with `config.json`
    /// (Hugging Face layout), or a directory holding exactly one `.gguf` file.
    pub fn discover(path: &Path) -> Result<Self> {
        if path.is_file() {
            if path.extension().is_some_and(|e| e == "gguf") {
                return Ok(ModelFiles::Gguf {
                    file: path.to_path_buf(),
                });
            }
            return Err(EngineError::load(format!(
                "{} is a file but not a .gguf; pass a .gguf file or a Hugging Face model directory",
                path.display()
            )));
        }
        if !path.is_dir() {
            return Err(EngineError::load(format!(
                "model path {} does not exist",
                path.display()
            )));
        }
        if path.join("config.json").is_file() {
            return Ok(ModelFiles::HuggingFace {
                dir: path.to_path_buf(),
                weights: safetensors_files(path)?,
            });
        }
        let ggufs: Vec<PathBuf> = read_dir(path)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .collect();
        match ggufs.as_slice() {
            [one] => Ok(ModelFiles::Gguf { file: one.clone() }),
            [] => Err(EngineError::load(format!(
                "{} has neither config.json (Hugging Face layout) nor a .gguf file",
                path.display()
            ))),
            _ => Err(EngineError::load(format!(
                "{} holds several .gguf files; pass the one to load",
                path.display()
            ))),
        }
    }

    /// The directory that may hold `tokenizer.json` and `prm.json`.
    pub fn dir(&self) -> PathBuf {
        match self {
            ModelFiles::HuggingFace { dir, .. } => dir.clone(),
            ModelFiles::Gguf { file } => file.parent().map(Path::to_path_buf).unwrap_or_default(),
        }
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| EngineError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    out.sort();
    Ok(out)
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| EngineError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// `model.safetensors`, or the shards named by `model.safetensors.index.json`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let json: serde_json::Value = serde_json::from_str(&read_text(&index)?)
            .map_err(|e| EngineError::load(format!("{}: {e}", index.display())))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| EngineError::load(format!("{} has no weight_map", index.display())))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(EngineError::load(format!(
                "shard {} named in the index is missing",
                missing.display()
            )));
        }
        return Ok(files);
    }
    Err(EngineError::load(format!(
        "{} has config.json but neither model.safetensors nor model.safetensors.index.json",
        dir.display()
    )))
}

/// Loads a Hugging Face checkpoint in `dtype` (F32 by default; BF16/F16 where the device supports it).
pub fn load_hf(
    dir: &Path,
    weights: &[PathBuf],
    dtype: DType,
    device: &Device,
    quantize: Quantize,
) -> Result<Transformer> {
    let config = ModelConfig::from_hf_json(&read_text(&dir.join("config.json"))?)?;
    if quantize != Quantize::None && (dtype != DType::F32 || !device.is_cpu()) {
        return Err(EngineError::load(
            "weight quantization needs f32 compute on the CPU (--dtype f32, no GPU)",
        ));
    }
    if quantize == Quantize::Bf16 && !crate::bf16_matmul::supported() {
        tracing::warn!(
            "--quantize bf16: no AVX-512 BF16 kernel here (or PONDER_NO_BF16 set); \
             the same bf16 products are emulated at f32 speed"
        );
    }
    // A dense weight; rounded to bf16, or its Q8_0 blocks when asked for and its rows
    // split into blocks.
    let layer = |w: Tensor, b: Option<Tensor>| -> Result<Linear> {
        if quantize == Quantize::Bf16 {
            return Ok(Linear::bf16(&w, b)?);
        }
        if quantize == Quantize::Q8_0 && w.dim(1)? % 32 == 0 {
            Ok(Linear::quantized(
                QTensor::quantize(&w, GgmlDType::Q8_0)?,
                b,
            )?)
        } else {
            Ok(Linear::dense(w, b)?)
        }
    };
    // SAFETY: the files are memory-mapped read-only for the length of this function
    // only: every tensor is copied out of the map (candle's safetensors loading copies
    // each slice into a new buffer, and the weights are transposed or quantized into our
    // own buffers), and the map is dropped when `vb` goes out of scope. A running node
    // therefore never reads the files again, and rewriting one under it is harmless;
    // only a rewrite during these lines is undefined, which is why docs/security.md
    // asks for a read-only model mount (the Helm chart and the image mount them so).
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(weights, dtype, device)? };
    let named =
        |e: candle_core::Error, what: &str| EngineError::load(format!("weight {what}: {e}"));
    let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
        vb.get(shape, name).map_err(|e| named(e, name))
    };
    let (h, hd) = (config.hidden_size, config.head_dim);
    let (q_out, kv_out) = (config.num_heads * hd, config.num_kv_heads * hd);
    let linear = |prefix: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
        let w = get(&format!("{prefix}.weight"), &[out, inp])?;
        let b = if bias {
            Some(get(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        layer(w, b)
    };
    let embed = get("model.embed_tokens.weight", &[config.vocab_size, h])?;
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let p = format!("model.layers.{i}");
        let bias = config.attention_bias;
        layers.push(Layer::new(LayerWeights {
            attn_norm: get(&format!("{p}.input_layernorm.weight"), &[h])?,
            q: linear(&format!("{p}.self_attn.q_proj"), q_out, h, bias)?,
            k: linear(&format!("{p}.self_attn.k_proj"), kv_out, h, bias)?,
            v: linear(&format!("{p}.self_attn.v_proj"), kv_out, h, bias)?,
            o: linear(&format!("{p}.self_attn.o_proj"), h, q_out, false)?,
            ffn_norm: get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
            gate: linear(
                &format!("{p}.mlp.gate_proj"),
                config.intermediate_size,
                h,
                false,
            )?,
            up: linear(
                &format!("{p}.mlp.up_proj"),
                config.intermediate_size,
                h,
                false,
            )?,
            down: linear(
                &format!("{p}.mlp.down_proj"),
                h,
                config.intermediate_size,
                false,
            )?,
        })?);
    }
    let lm_head = if config.tie_word_embeddings && !vb.contains_tensor("lm_head.weight") {
        layer(embed.clone(), None)?
    } else {
        linear("lm_head", config.vocab_size, h, false)?
    };
    let norm = get("model.norm.weight", &[h])?;
    let rope = RopeTable::new(&config);
    Ok(Transformer {
        config,
        embed,
        layers,
        norm,
        lm_head,
        rope,
        device: device.clone(),
        dtype,
        kv_dtype: KvDtype::F32,
    })
}

/// Reads named tensors out of an open GGUF file.
struct GgufTensors {
    content: gguf_file::Content,
    reader: std::io::BufReader<std::fs::File>,
    device: Device,
}

impl GgufTensors {
    fn quantized(&mut self, name: &str) -> Result<QTensor> {
        self.content
            .tensor(&mut self.reader, name, &self.device)
            .map_err(|e| EngineError::load(format!("GGUF tensor {name}: {e}")))
    }

    fn dense(&mut self, name: &str) -> Result<Tensor> {
        Ok(self.quantized(name)?.dequantize(&self.device)?)
    }

    /// `<name>.weight` (quantized unless stored as a float type) and optional `<name>.bias`.
    fn linear(&mut self, name: &str, bias: bool) -> Result<Linear> {
        let w = self.quantized(&format!("{name}.weight"))?;
        let b = if bias {
            Some(self.dense(&format!("{name}.bias"))?)
        } else {
            None
        };
        if matches!(w.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
            Ok(Linear::dense(w.dequantize(&self.device)?, b)?)
        } else {
            Ok(Linear::quantized(w, b)?)
        }
    }
}

/// Loads a GGUF file; quantized matrices stay quantized, everything else is f32.
/// Returns the file's metadata too (the tokenizer may be built from it).
pub fn load_gguf(file: &Path, device: &Device) -> Result<(Transformer, gguf_file::Content)> {
    let io = |source| EngineError::Io {
        path: file.display().to_string(),
        source,
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(file).map_err(io)?);
    let content = gguf_file::Content::read(&mut reader).map_err(|e| {
        EngineError::load(format!(
            "{} is not a readable GGUF file: {e}",
            file.display()
        ))
    })?;
    let config = ModelConfig::from_gguf(&content)?;
    let mut t = GgufTensors {
        content,
        reader,
        device: device.clone(),
    };
    let embed = t.dense("token_embd.weight")?;
    let bias = config.attention_bias;
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let p = format!("blk.{i}");
        layers.push(Layer::new(LayerWeights {
            attn_norm: t.dense(&format!("{p}.attn_norm.weight"))?,
            q: t.linear(&format!("{p}.attn_q"), bias)?,
            k: t.linear(&format!("{p}.attn_k"), bias)?,
            v: t.linear(&format!("{p}.attn_v"), bias)?,
            o: t.linear(&format!("{p}.attn_output"), false)?,
            ffn_norm: t.dense(&format!("{p}.ffn_norm.weight"))?,
            gate: t.linear(&format!("{p}.ffn_gate"), false)?,
            up: t.linear(&format!("{p}.ffn_up"), false)?,
            down: t.linear(&format!("{p}.ffn_down"), false)?,
        })?);
    }
    let lm_head = t.linear(
        if config.tie_word_embeddings {
            "token_embd"
        } else {
            "output"
        },
        false,
    )?;
    let norm = t.dense("output_norm.weight")?;
    let rope = RopeTable::new(&config);
    let model = Transformer {
        config,
        embed,
        layers,
        norm,
        lm_head,
        rope,
        device: device.clone(),
        dtype: DType::F32,
        kv_dtype: KvDtype::F32,
    };
    Ok((model, t.content))
}
