//! `ponder-load`: the load driver for a Ponder orchestrator.
//!
//! It answers the questions a user asks before trusting a cluster: how many queries per
//! second does it sustain within a latency SLO, how many of the answers are *right*, and
//! what does each cost in compute. The map:
//!
//! - [`args`]: the command line (`run`, `sweep`, `compare`), validated into plans.
//! - [`workload`]: what to ask: ponder-arith questions (level mix, seed) or a JSONL file,
//!   each request drawn with a strategy and budget from the [`mix`].
//! - [`arrivals`]: when to ask in an open loop: Poisson, gamma (burstiness) or constant
//!   inter-arrival gaps, as absolute offsets from the start.
//! - [`driver`]: runs a plan (open loop with an optional concurrency cap, or closed loop)
//!   against a [`target`] and returns one [`record`] per request. Latency is measured
//!   from the *intended* send time, so a slow response never hides the queueing it
//!   causes (no coordinated omission).
//! - [`openai`]: `--protocol openai`, the same requests through the HTTP gateway.
//! - [`report`]: HDR-histogram latency quantiles, errors by gRPC code, throughput,
//!   accuracy and goodput from the records; [`render`] prints it as a table.
//! - [`sweep`]: steps the open-loop rate up until the SLO breaks and reports the knee.
//! - [`compare`]: the differences between two saved reports.
//! - [`progress`]: the live progress line.
//!
//! Safety rails: every loop is bounded both in requests and in time and stops by
//! itself, and the driver only ever sends to the one address it is given (it does no
//! discovery and follows no redirects).

pub mod args;
pub mod arrivals;
pub mod compare;
pub mod driver;
pub mod mix;
pub mod openai;
pub mod progress;
pub mod record;
pub mod render;
pub mod report;
pub mod sweep;
pub mod target;
pub mod workload;

pub use args::{Cli, Command};
pub use driver::{run, Plan};
use ponder_cluster::BoxedFuture;
pub use report::Report;

/// Runs a parsed command line: the whole `ponder-load` binary.
pub fn main(cli: Cli) -> BoxedFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        match cli.command {
            Command::Run(a) => args::run_command(a).await,
            Command::Sweep(a) => args::sweep_command(a).await,
            Command::Compare(a) => compare::compare_files(&a.a, &a.b),
        }
    })
}
