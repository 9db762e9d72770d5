//! Cluster plumbing shared by every Ponder service.
//!
//! Why one crate: the generator, verifier and orchestrator differ only in the gRPC
//! service they expose. Discovery (etcd or a static list), registration under a lease,
//! routing with affinity and failover, health, reflection, metrics, logging and
//! graceful shutdown are the same for all of them and live here once. So is security:
//! TLS and mTLS on every hop (`tls`), how clients dial a service (`connect`), etcd's
//! TLS and credentials (`discovery::EtcdConfig`), and secrets kept out of logs
//! (`secret`); see docs/security.md.

pub mod config;
pub mod connect;
pub mod discovery;
pub mod hedge;
pub mod member;
pub mod member_check;
pub mod member_conn;
pub mod membership;
pub mod metrics;
pub mod models;
pub mod node;
pub mod pool;
pub mod register;
pub mod reload;
pub mod request_id;
pub mod secret;
pub mod status;
pub mod telemetry;
pub mod tenant;
pub mod tls;
pub mod tls_server;
pub mod trace;
pub mod wire;

pub use member::{Member, MemberKey, MemberRecord, Role};

/// What the public async entry points of Ponder's crates return (starting and stopping
/// nodes, `run`, client calls): a boxed future. An `async fn`'s state machine is
/// compiled in every crate that polls it, so an unboxed entry point was compiled again
/// in each binary and test that awaits it (the 7-line `ponder-orchestrator` binary took
/// 71 s to build); boxed, it is compiled once, in its own crate (docs/benchmarks.md,
/// "Code shape"). The one allocation per call is nothing beside what these calls do.
pub type BoxedFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
pub use membership::{Registry, Snapshot};
pub use pool::{GeneratorPool, VerifierPool};
