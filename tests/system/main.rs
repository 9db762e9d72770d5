//! The cross-service tests, one binary (one link of the whole stack instead of five, and
//! the model-bound eval test overlaps the waiting-bound cluster tests): real services on
//! 127.0.0.1 with ephemeral ports, the bundled models, and a real `etcd` process where
//! discovery is involved (.ci/run installs it). The fault-injection suite stays a
//! binary of its own (tests/chaos.rs) so that nothing runs beside it.

mod adaptive;
mod cli;
mod clients;
mod cluster;
mod common;
mod crate_graph;
mod discovery;
mod eval;
mod gateway;
mod limits;
mod members;
mod metrics;
mod models;
mod partition;
mod recorded;
mod rotation;
mod scale;
mod security;
mod traces;
