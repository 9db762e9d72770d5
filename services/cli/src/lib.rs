//! The `ponder` command's library: the embedded local cluster and the client commands.

pub mod allocator;
pub mod client;
pub mod embedded;
pub mod eval;
pub mod exit;
pub mod fit_latency;
/// `--json` output: the response messages with the proto's field names (shared with the
/// gateway's `ponder` field).
pub use ponder_orchestrator::json;
pub mod models;
