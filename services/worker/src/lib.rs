//! ponder-worker: the model side of a Ponder cluster.
//!
//! Why a crate of its own: the strategies (`ponder-search`) and the cluster plumbing
//! (`ponder-cluster`: discovery, routing, pools, TLS, metrics) link no model code, so
//! the orchestrator and the load driver build without candle. Everything that touches
//! the engine lives here, once, and is shared by the generator and verifier nodes,
//! `ponder up` and `ponder eval`:
//!
//! - [`backend`]: what a node answers with: the engine, or a recording of it
//!   ([`recorded`], for scale measurements), and the recorder `--record-calls` adds.
//! - [`convert`]: the engine's types to the search traits' types (sampling parameters,
//!   finish reasons, errors): the one place they meet.
//! - [`local`]: [`ponder_search::Generate`] and [`ponder_search::Score`] in-process,
//!   over the engine's model workers.
//! - [`manifest`]: the models directory (`models/manifest.json`): which model is the
//!   default generator and verifier, and the digests checked before one is served.
//! - [`node`]: the lifecycle of a node serving a model (load, warm up, SERVING,
//!   register, drain), its flags and its metrics.
//! - [`rpc`]: what every worker RPC does around its handler (request id, span,
//!   latency, the one error map) and the ModelInfo answer.

pub mod backend;
pub mod convert;
pub mod local;
pub mod manifest;
pub mod node;
pub mod recorded;
pub mod rpc;

/// The runtime a worker binary serves on: the engine's CPU threads pinned first, then a
/// one-worker tokio runtime (the model worker has its own thread).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    ponder_engine::engine::cli_runtime()
}
