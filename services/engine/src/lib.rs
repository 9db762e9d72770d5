//! Ponder's inference engine: what every generator and verifier node runs.
//!
//! The map, in the order a request meets it:
//! - [`engine`]: load a model from a local path ([`loader`] reads Hugging Face
//!   safetensors or GGUF; [`config`] holds the architecture numbers), its
//!   tokenizer ([`tokenizer`], or [`gguf_tokenizer`] from GGUF metadata) and its
//!   optional PRM convention ([`prm`]).
//! - [`model`]: the Llama/Qwen2 forward pass over a *packed* batch of sequences
//!   of unequal length, each with its own copy-on-write KV cache ([`kv`]);
//!   linear layers over dense or quantized weights ([`linear`], with our AVX2
//!   Q4_1/Q8_0 kernels in [`qmatmul`] and [`quant_groups`], their input quantized by
//!   [`act_quant`], the AVX-512 BF16 one in [`bf16_matmul`]); [`parallel`] says which
//!   threads a pass's other parallel work runs on.
//! - [`worker`]: the model worker actor; it owns the model, runs continuous
//!   batching, samples ([`sampling`]) and reuses prompt prefixes ([`prefix_cache`]).
//!
//! Services wrap a [`worker::ModelWorker`]; nothing else touches the model.

pub mod act_quant;
pub mod attention;
pub mod bf16_matmul;
pub mod char_tokenizer;
pub mod config;
pub mod engine;
pub mod error;
pub mod fixtures;
pub mod gguf_tokenizer;
pub mod kv;
pub mod linear;
pub mod loader;
pub mod model;
pub mod parallel;
pub mod prefix_cache;
pub mod prm;
pub mod qmatmul;
pub mod quant_groups;
pub mod sampling;
pub mod small_matmul;
pub mod tokenizer;
pub mod worker;

pub use engine::{load, LoadOptions, LoadedModel, ModelInfo, Quantize};
pub use error::{EngineError, Result};
pub use kv::KvDtype;
pub use sampling::{FinishReason, SamplingParams};
pub use worker::{
    Completion, GenerateRequest, GenerateResponse, ModelWorker, ScoreRequest, ScoreResponse,
    WorkerConfig, WorkerStats, DEFAULT_MAX_PROMPT_BYTES, DEFAULT_MAX_STOP_BYTES,
    DEFAULT_MAX_STOP_STRINGS, DEFAULT_PREFIX_CACHE_MIB, MAX_PROMPT_CHARS,
};
