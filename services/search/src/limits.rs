//! What an operator allows one query, whatever its request asks for.
//!
//! Why limits beside the budget: the budget is the client's ask, bounded only by the
//! API's ranges (4,096 generations, 1,000 rounds). A server shared by many clients
//! needs lower caps set by its operator (`ponder-orchestrator --max-generations ...`),
//! a deadline for the query that sets none, and a bound on the calls one query keeps
//! in flight, so that a single request, however it is shaped, takes a bounded share of
//! the pools (docs/security.md, "Bounded compute"). Requests above a cap are refused
//! with a message naming it rather than silently cut, so a client never gets a smaller
//! search than it asked for without knowing.

use crate::budget::{Budget, MAX_GENERATIONS};
use crate::error::{Result, SearchError};
use std::time::{Duration, Instant};

/// Generate or score calls one query keeps in flight by default.
pub const DEFAULT_CALLS_IN_FLIGHT: u32 = 16;
/// The API's own bound on a tree strategy's rounds.
pub const MAX_ROUNDS: u32 = 1000;

/// The operator's caps on one query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryLimits {
    /// Largest `budget.max_generations` accepted.
    pub max_generations: u32,
    /// The most rounds a tree strategy runs: a request's (or the policy's) `max_rounds`
    /// above it is lowered to it. Rounds are an upper bound that most searches never
    /// reach (they end when every beam has answered), so this is a clamp, not a refusal.
    pub max_rounds: u32,
    /// Generate and score calls of one query in flight at once; the rest wait.
    pub max_calls_in_flight: u32,
    /// The longest a query runs: its deadline when the client sets none, and the cap
    /// on one it sets. None: no cap (in-process use, tests).
    pub max_time: Option<Duration>,
}

impl Default for QueryLimits {
    /// The API's own bounds, no time cap.
    fn default() -> Self {
        Self {
            max_generations: MAX_GENERATIONS,
            max_rounds: MAX_ROUNDS,
            max_calls_in_flight: DEFAULT_CALLS_IN_FLIGHT,
            max_time: None,
        }
    }
}

impl QueryLimits {
    /// Checks the operator's values; the message names the flag to fix.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(1..=MAX_GENERATIONS).contains(&self.max_generations) {
            return Err(format!(
                "--max-generations must be in 1..={MAX_GENERATIONS}, got {}",
                self.max_generations
            ));
        }
        if !(1..=MAX_ROUNDS).contains(&self.max_rounds) {
            return Err(format!(
                "--max-rounds must be in 1..={MAX_ROUNDS}, got {}",
                self.max_rounds
            ));
        }
        if !(1..=4096).contains(&self.max_calls_in_flight) {
            return Err(format!(
                "--max-calls-per-query must be in 1..=4096, got {}",
                self.max_calls_in_flight
            ));
        }
        match self.max_time {
            Some(t) if t.is_zero() || t > Duration::from_secs(24 * 3600) => Err(format!(
                "--max-query-seconds must be above 0 and at most one day, got {}",
                t.as_secs_f64()
            )),
            _ => Ok(()),
        }
    }

    /// Refuses a budget above the generations cap (INVALID_ARGUMENT naming it) and
    /// gives `budget` the time cap: its deadline becomes the earlier of its own and
    /// `now + max_time`. (The round cap applies when the strategy runs.)
    pub(crate) fn apply(&self, budget: &mut Budget, now: Instant) -> Result<()> {
        if budget.max_generations > self.max_generations {
            return Err(SearchError::invalid(format!(
                "budget.max_generations must be at most {} on this server (its operator's \
                 --max-generations); got {}",
                self.max_generations, budget.max_generations
            )));
        }
        if let Some(t) = self.max_time {
            let cap = now + t;
            budget.deadline = Some(budget.deadline.map_or(cap, |d| d.min(cap)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> QueryLimits {
        QueryLimits {
            max_generations: 64,
            max_rounds: 20,
            max_calls_in_flight: 4,
            max_time: Some(Duration::from_secs(10)),
        }
    }

    #[test]
    fn a_budget_above_the_cap_is_refused_naming_the_flag() {
        let now = Instant::now();
        let mut big = Budget::new(65, 0, None).unwrap();
        let e = limits().apply(&mut big, now).unwrap_err();
        assert!(
            matches!(&e, SearchError::Invalid(m) if m.contains("at most 64") && m.contains("--max-generations")),
            "{e}"
        );
        let mut ok = Budget::new(64, 0, None).unwrap();
        limits().apply(&mut ok, now).unwrap();
    }

    #[test]
    fn the_time_cap_is_the_default_deadline_and_caps_a_later_one() {
        let now = Instant::now();
        let mut none = Budget::new(4, 0, None).unwrap();
        limits().apply(&mut none, now).unwrap();
        assert_eq!(none.deadline, Some(now + Duration::from_secs(10)));
        let mut later = Budget::new(4, 0, Some(now + Duration::from_secs(60))).unwrap();
        limits().apply(&mut later, now).unwrap();
        assert_eq!(later.deadline, Some(now + Duration::from_secs(10)));
        let sooner = now + Duration::from_secs(2);
        let mut early = Budget::new(4, 0, Some(sooner)).unwrap();
        limits().apply(&mut early, now).unwrap();
        assert_eq!(early.deadline, Some(sooner));
        let mut open = Budget::new(4, 0, None).unwrap();
        QueryLimits::default().apply(&mut open, now).unwrap();
        assert_eq!(open.deadline, None);
    }

    #[test]
    fn operator_values_out_of_range_are_refused() {
        assert!(limits().check().is_ok());
        for bad in [
            QueryLimits {
                max_generations: 0,
                ..limits()
            },
            QueryLimits {
                max_generations: 5000,
                ..limits()
            },
            QueryLimits {
                max_rounds: 0,
                ..limits()
            },
            QueryLimits {
                max_calls_in_flight: 0,
                ..limits()
            },
            QueryLimits {
                max_time: Some(Duration::ZERO),
                ..limits()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
