//! The `ponder` command's library: the embedded local cluster and the client commands.

pub mod client;
pub mod embedded;
pub mod eval;
pub mod exit;
pub mod json;
pub mod models;
