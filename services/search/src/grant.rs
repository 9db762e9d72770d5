//! Load-adaptive budgets: how many of its budget's generations a query may spend.
//!
//! Why a trait here and the controller elsewhere: the search only needs to *ask*, at
//! the moments a grant can change (when it starts, when compute-optimal has predicted
//! the question's difficulty, and whenever it reserves more work); what the answer
//! depends on (the cluster's load, the fitted accuracy curves) is the orchestrator's
//! business (`ponder_orchestrator::control`). A query without an [`Allowance`] is a
//! fixed budget: it is granted its maximum, exactly as before budgets could adapt.
//!
//! The client's `max_generations` stays a hard maximum and `min_generations` a floor:
//! the ledger clamps every grant between them, so no allowance can break either
//! ([`crate::budget::Ledger::set_granted`]).

use std::fmt;

/// How a query's budget is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetMode {
    /// The maximum; the strategy may still stop early.
    Fixed,
    /// Between the floor and the maximum, from load and predicted difficulty.
    Adaptive,
}

impl BudgetMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Adaptive => "adaptive",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "fixed" => Ok(Self::Fixed),
            "adaptive" => Ok(Self::Adaptive),
            other => Err(format!(
                "unknown budget mode {other:?}: use fixed or adaptive"
            )),
        }
    }
}

impl fmt::Display for BudgetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a query was granted what it was (`SolveResponse.budget_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantReason {
    /// A fixed budget: the maximum.
    Fixed,
    /// The client's key is in a priority class: the maximum under any load.
    Priority,
    /// Load below the controller's threshold: the maximum.
    Idle,
    /// Load priced generations: the grant is where the question's accuracy curve
    /// stops paying for them.
    Load,
    /// Load cut the grant to the client's floor.
    Floor,
}

impl GrantReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Priority => "priority",
            Self::Idle => "idle",
            Self::Load => "load",
            Self::Floor => "floor",
        }
    }
}

/// What is known of a query when its grant is asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrantAsk<'a> {
    /// The client's maximum and floor (the ledger clamps to them in any case).
    pub max: u32,
    pub floor: u32,
    /// The predicted difficulty bin (0 = easiest), once compute-optimal has probed.
    pub bin: Option<usize>,
    /// The generator model the query runs on now.
    pub model: &'a str,
}

/// A grant: generations the query may spend in all (spent ones included), and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub generations: u32,
    pub reason: GrantReason,
}

impl Grant {
    pub fn fixed(max: u32) -> Self {
        Self {
            generations: max,
            reason: GrantReason::Fixed,
        }
    }
}

/// Grants a running query its budget; asked again wave by wave, so a grant follows
/// the load while the query runs. Must be cheap: it is asked on every reservation.
pub trait Allowance: Send + Sync + fmt::Debug {
    fn grant(&self, ask: &GrantAsk<'_>) -> Grant;
}
