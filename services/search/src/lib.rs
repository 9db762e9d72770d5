//! Test-time search over a generator and a process reward model.
//!
//! Why a crate of its own: a strategy (majority vote, best-of-N, ...) is plain async
//! code over two traits, [`Generate`] and [`Score`]. The worker crate implements them
//! in-process over the engine (`ponder_worker::local`); the cluster crate implements them with gRPC pools that
//! route, retry and fail over. The same strategy code therefore runs in unit tests,
//! in offline evaluation and in the distributed orchestrator, and a result measured in
//! one place holds in the other.
//!
//! [`solve()`] is the entry point: it validates the request, runs one strategy under a
//! [`Budget`] (never spending past it) and reports the [`Usage`].

pub mod aggregate;
pub mod budget;
pub mod context;
pub mod error;
pub mod format;
pub mod grant;
pub mod limits;
pub mod models;
pub mod replay;
pub mod scripted;
pub mod solve;
pub mod strategy;
pub mod traits;

pub use aggregate::Aggregation;
pub use budget::{Budget, Ledger, Usage};
pub use error::{Result, SearchError};
pub use format::SolutionFormat;
pub use grant::{Allowance, BudgetMode, Grant, GrantAsk, GrantReason};
pub use limits::QueryLimits;
pub use models::{Generators, Model};
pub use solve::{
    draw, solve, solve_on, solve_query, solve_query_on, Outcome, Progress, Query, SolveParams,
};
pub use strategy::{Rule, StrategyKind};

/// Candidates per score call.
pub const MAX_SCORE_BATCH: usize = 256;
pub use traits::{
    Candidate, Finish, GenOutput, GenRequest, Generate, Sample, Score, ScoreOutput, ScoreRequest,
};
