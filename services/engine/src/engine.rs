//! Loading a complete model (weights, tokenizer, optional PRM convention) from a
//! local path, and describing it.

use crate::error::{EngineError, Result};
use crate::gguf_tokenizer;
use crate::kv::KvDtype;
use crate::loader::{is_inside_model_dir, load_gguf, load_hf, ModelFiles};
use crate::model::{Segment, Transformer};
use crate::prm::{Chain, Combine, Prm, PrmConfig};
use crate::tokenizer::TextCodec;
use candle_core::{DType, Device};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Compute dtype for safetensors models (GGUF models always compute in f32).
    pub dtype: DType,
    /// Overrides `tokenizer.json` beside the weights / the GGUF vocabulary.
    pub tokenizer: Option<PathBuf>,
    /// Overrides `prm.json` beside the weights.
    pub prm: Option<PrmConfig>,
    /// Quantize a safetensors model's linear layers at load (CPU, f32 compute only).
    pub quantize: Quantize,
    /// How the model's KV caches store keys and values: f32 (exact, the default) or f16
    /// (half the bytes for attention to read; docs/engine.md, "f16 KV cache").
    pub kv_cache: KvDtype,
}

/// Weight quantization applied at load to a safetensors model's linear layers.
///
/// `q8_0` stores each weight row as ggml Q8_0 blocks (32 int8 values and one f16 scale)
/// and runs our int8 kernels (VNNI where the CPU has it): a quarter of the weight bytes
/// and about 3x the measured int8 over f32 arithmetic peak. Activations are quantized
/// per row as ggml does, so outputs move slightly; `docs/engine.md` has the accuracy
/// measured on the bundled models. GGUF files keep the quantization they were saved with.
///
/// `bf16` rounds each weight to bf16 and runs our AVX-512 BF16 kernel (`vdpbf16ps`:
/// twice the multiply-adds per instruction of f32), activations rounded to bf16 as they
/// enter, sums f32 (`crate::bf16_matmul`). On a CPU without AVX-512 BF16 the same
/// products are emulated in f32 (`crate::linear::Weight::Bf16Emulated`), with a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantize {
    #[default]
    None,
    Q8_0,
    Bf16,
}

impl Quantize {
    const ALL: [Quantize; 3] = [Quantize::None, Quantize::Q8_0, Quantize::Bf16];

    /// How flags and manifests spell it.
    pub fn name(self) -> &'static str {
        match self {
            Quantize::None => "none",
            Quantize::Q8_0 => "q8_0",
            Quantize::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for Quantize {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| format!("quantization must be none, q8_0 or bf16, got {s:?}"))
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            tokenizer: None,
            prm: None,
            quantize: Quantize::None,
            kv_cache: KvDtype::F32,
        }
    }
}

/// What a node reports about its model (`ModelInfo` RPCs, logs, metrics).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    pub path: String,
    pub architecture: String,
    pub format: String,
    pub dtype: String,
    pub parameters: u64,
    pub vocab_size: usize,
    pub context_length: usize,
    pub num_layers: usize,
    pub hidden_size: usize,
    /// How its KV caches store keys and values: "f32" or "f16" (empty: no cache, a
    /// recorded node).
    pub kv_cache: String,
    /// "token_prob" or "class_head" when the model is loaded as a PRM.
    pub prm: Option<String>,
    /// Longest UTF-8 text any single vocabulary token decodes to: a generated
    /// completion of `t` tokens has at most `t * max_token_bytes` bytes.
    pub max_token_bytes: usize,
    /// For a PRM: what scoring costs beyond the question's and steps' own bytes.
    pub prm_cost: Option<crate::prm::PrmCost>,
}

pub struct LoadedModel {
    pub model: Transformer,
    /// Shared with the worker handle, which tokenises requests on the caller's task.
    pub codec: Arc<TextCodec>,
    /// For an ensemble verifier, this model's own part: its readings unchained (the
    /// ensemble chains the combined readings, [`Ensemble::chain`]).
    pub prm: Option<Arc<Prm>>,
    pub info: ModelInfo,
    /// The other models of a verifier ensemble (`prm.json` `members`), each loaded as a
    /// PRM of the same convention, unchained.
    pub ensemble: Option<Ensemble>,
}

/// The members of a verifier ensemble and how their readings join this model's.
pub struct Ensemble {
    pub members: Vec<LoadedModel>,
    pub combine: Combine,
    pub chain: Chain,
}

/// The CPU by default; the first CUDA device when built with `--features cuda` and one exists.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(dev) = Device::new_cuda(0) {
        return dev;
    }
    Device::Cpu
}

/// Pins candle's CPU thread count once, before any pool starts. Call first thing
/// in `main`, before other threads exist.
///
/// Why: without `RAYON_NUM_THREADS`, candle 0.11 asks `num_cpus::get_physical()`
/// (which parses /proc/cpuinfo) on every matmul, a measurable share of decode time.
pub fn init_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        // SAFETY (edition 2021: safe fn): documented to run before other threads start.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// The runtime our command-line tools use: CPU threads pinned first, then a
/// one-worker tokio runtime (the model worker has its own thread).
pub fn cli_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    init_cpu_threads();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let files = ModelFiles::discover(path)?;
    let dir = files.dir();
    let tokenizer_json = opts
        .tokenizer
        .clone()
        .or_else(|| Some(dir.join("tokenizer.json")).filter(|p| p.is_file()));
    let (mut model, codec, weights, format) = match &files {
        ModelFiles::HuggingFace { dir, weights } => {
            let model = load_hf(dir, weights, opts.dtype, &opts.device, opts.quantize)?;
            let tok = tokenizer_json.as_deref().ok_or_else(|| {
                EngineError::load(format!("{} has no tokenizer.json", dir.display()))
            })?;
            let codec = TextCodec::from_file(tok, model.config.eos_token_ids.clone())?;
            let format = match opts.quantize {
                Quantize::None => "safetensors".to_string(),
                Quantize::Q8_0 => "safetensors/q8_0".to_string(),
                Quantize::Bf16 if crate::bf16_matmul::supported() => "safetensors/bf16".to_string(),
                Quantize::Bf16 => "safetensors/bf16 (emulated: no AVX-512 BF16)".to_string(),
            };
            (model, codec, weights.clone(), format)
        }
        ModelFiles::Gguf { file } => {
            let (model, content) = load_gguf(file, &opts.device)?;
            let eos = model.config.eos_token_ids.clone();
            let codec = match tokenizer_json.as_deref() {
                Some(tok) => TextCodec::from_file(tok, eos)?,
                None => {
                    let add_bos = content
                        .metadata
                        .get("tokenizer.ggml.add_bos_token")
                        .and_then(|v| v.to_bool().ok())
                        .unwrap_or(false);
                    let bos = if add_bos {
                        model.config.bos_token_id
                    } else {
                        None
                    };
                    TextCodec::from_gguf(gguf_tokenizer::from_gguf(&content)?, bos, eos)
                }
            };
            let quant = content
                .tensor_infos
                .get("blk.0.attn_q.weight")
                .map(|t| format!("{:?}", t.ggml_dtype))
                .unwrap_or_default();
            (model, codec, vec![], format!("gguf/{quant}"))
        }
    };
    model.kv_dtype = opts.kv_cache;
    let prm_config = match &opts.prm {
        Some(cfg) => Some(cfg.clone()),
        None => {
            let p = dir.join("prm.json");
            if p.is_file() {
                Some(PrmConfig::from_file(&p)?)
            } else {
                None
            }
        }
    };
    let (prm_config, ensemble) = match prm_config {
        Some(cfg) if !cfg.members.is_empty() => {
            let (own, ensemble) =
                load_ensemble(&dir, cfg, tokenizer_json.as_deref(), &model, opts)?;
            (Some(own), Some(ensemble))
        }
        other => (other, None),
    };
    let prm = prm_config
        .map(|cfg| Prm::new(cfg, &codec, &weights, model.dtype, &opts.device))
        .transpose()?;
    let cfg = &model.config;
    let member_parameters: u64 = ensemble
        .iter()
        .flat_map(|e| &e.members)
        .map(|m| m.info.parameters)
        .sum();
    let info = ModelInfo {
        id: path
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_else(|| "model".into()),
        path: path.display().to_string(),
        architecture: cfg.arch.name().into(),
        format,
        dtype: format!("{:?}", model.dtype).to_lowercase(),
        kv_cache: model.kv_dtype.name().to_string(),
        // An ensemble runs every member over the same tokens: its FLOPs per token are
        // those of all its parameters.
        parameters: cfg.num_parameters() + member_parameters,
        vocab_size: cfg.vocab_size,
        context_length: model.rope.max_positions(),
        num_layers: cfg.num_layers,
        hidden_size: cfg.hidden_size,
        prm: prm.as_ref().map(|p| match p.config().readout {
            crate::prm::ReadoutConfig::TokenProb { .. } => "token_prob".to_string(),
            crate::prm::ReadoutConfig::ClassHead { .. } => "class_head".to_string(),
            crate::prm::ReadoutConfig::Likelihood => "likelihood".to_string(),
        }),
        max_token_bytes: codec.max_token_bytes(),
        prm_cost: prm.as_ref().map(|p| p.cost()),
    };
    Ok(LoadedModel {
        model,
        codec: Arc::new(codec),
        prm: prm.map(Arc::new),
        info,
        ensemble,
    })
}

/// Loads the members an ensemble's `prm.json` names; returns this model's own PRM
/// convention (unchained) and the ensemble.
///
/// Members are read with this model's tokenizer, so every member sees the same tokens
/// and step spans; a member of another vocabulary size is refused. A member directory
/// must lie inside this model's directory, so that the files a manifest hashes for this
/// model can cover the members too.
fn load_ensemble(
    dir: &Path,
    cfg: PrmConfig,
    tokenizer: Option<&Path>,
    model: &Transformer,
    opts: &LoadOptions,
) -> Result<(PrmConfig, Ensemble)> {
    let unchained = PrmConfig {
        chain: Chain::None,
        members: vec![],
        ..cfg.clone()
    };
    let mut members = Vec::with_capacity(cfg.members.len());
    for name in &cfg.members {
        if !is_inside_model_dir(name) {
            return Err(EngineError::load(format!(
                "prm.json member {name:?} must be a directory inside {}",
                dir.display()
            )));
        }
        let member_opts = LoadOptions {
            tokenizer: tokenizer.map(Path::to_path_buf),
            prm: Some(unchained.clone()),
            ..opts.clone()
        };
        let member = load(&dir.join(name), &member_opts)
            .map_err(|e| EngineError::load(format!("prm.json member {name:?}: {e}")))?;
        if member.model.config.vocab_size != model.config.vocab_size {
            return Err(EngineError::load(format!(
                "prm.json member {name:?} has a vocabulary of {} tokens, this model {}: \
                 ensemble members must share the tokenizer",
                member.model.config.vocab_size, model.config.vocab_size
            )));
        }
        members.push(member);
    }
    let ensemble = Ensemble {
        members,
        combine: cfg.combine,
        chain: cfg.chain,
    };
    Ok((unchained, ensemble))
}

impl LoadedModel {
    /// One small forward pass so the first real request does not pay for lazy
    /// initialisation (allocator, thread pools). Readiness waits for this.
    pub fn warm_up(&self) -> Result<()> {
        let ids = self.codec.encode("Hello", true)?;
        let ids = if ids.is_empty() { vec![0] } else { ids };
        let mut cache = self.model.new_cache();
        let hidden = self.model.forward(&mut [Segment {
            tokens: &ids,
            cache: &mut cache,
        }])?;
        let last = hidden.narrow(0, ids.len() - 1, 1)?;
        self.model.logits(&last)?;
        for member in self.ensemble.iter().flat_map(|e| &e.members) {
            member.warm_up()?;
        }
        Ok(())
    }
}
