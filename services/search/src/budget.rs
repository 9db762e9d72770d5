//! The per-query compute budget and the ledger that enforces it.
//!
//! A budget has up to four limits: generations (the paper's unit), tokens (generator
//! plus verifier), FLOPs (generator plus verifier, [`crate::traits::forward_flops`]) and
//! a deadline. Work is *reserved* at its worst-case cost before it is started and
//! *booked* at its real cost when it returns, so the sum of what was spent can never
//! pass a limit, even with several calls in flight.
//!
//! FLOPs are kept as `f64`, as on the wire: 2 x parameters x tokens overflows `u64` for
//! large models and long budgets. Every amount is a whole number far below 2^53 at the
//! sizes budgets take, and a reservation is checked with a relative tolerance of 1e-9
//! so that rounding never refuses work that fits.

use crate::error::{Result, SearchError};
use std::time::Instant;

pub const MAX_GENERATIONS: u32 = 4096;
pub const MIN_TOKENS: u64 = 64;
pub const MAX_TOKENS: u64 = 1 << 32;
pub const DEFAULT_GENERATIONS: u32 = 16;
/// The largest FLOPs budget a request may name (1e21: a trillion-parameter model
/// over 500M tokens); anything larger is a mistake, not a budget.
pub const MAX_FLOPS: f64 = 1e21;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub max_generations: u32,
    /// The fewest generations a load-adaptive grant goes down to (1..=max_generations);
    /// a fixed budget is granted its maximum ([`crate::grant`]).
    pub min_generations: u32,
    /// None: no token limit.
    pub max_tokens: Option<u64>,
    /// None: no FLOPs limit.
    pub max_flops: Option<f64>,
    pub deadline: Option<Instant>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_generations: DEFAULT_GENERATIONS,
            min_generations: 1,
            max_tokens: None,
            max_flops: None,
            deadline: None,
        }
    }
}

impl Budget {
    /// Builds a budget from wire values (`max_tokens == 0` means no token limit).
    pub fn new(max_generations: u32, max_tokens: u64, deadline: Option<Instant>) -> Result<Self> {
        if max_generations == 0 || max_generations > MAX_GENERATIONS {
            return Err(SearchError::invalid(format!(
                "budget.max_generations must be between 1 and {MAX_GENERATIONS}, got {max_generations}"
            )));
        }
        if max_tokens != 0 && !(MIN_TOKENS..=MAX_TOKENS).contains(&max_tokens) {
            return Err(SearchError::invalid(format!(
                "budget.max_tokens must be 0 (no limit) or between {MIN_TOKENS} and {MAX_TOKENS}, got {max_tokens}"
            )));
        }
        Ok(Self {
            max_generations,
            min_generations: 1,
            max_tokens: (max_tokens != 0).then_some(max_tokens),
            max_flops: None,
            deadline,
        })
    }

    /// Adds a floor from its wire value (`0` means 1): the fewest generations a
    /// load-adaptive grant goes down to. Above the maximum it is a mistake.
    pub fn with_min_generations(mut self, min_generations: u32) -> Result<Self> {
        let floor = min_generations.max(1);
        if floor > self.max_generations {
            return Err(SearchError::invalid(format!(
                "budget.min_generations ({floor}) is above budget.max_generations ({}): the floor must be at most the maximum",
                self.max_generations
            )));
        }
        self.min_generations = floor;
        Ok(self)
    }

    /// Adds a FLOPs limit from its wire value (`0` means none): generator plus verifier
    /// FLOPs, probes included, each call reserved at its worst case.
    pub fn with_max_flops(mut self, max_flops: f64) -> Result<Self> {
        if max_flops == 0.0 {
            self.max_flops = None;
            return Ok(self);
        }
        if !(max_flops.is_finite() && max_flops > 0.0 && max_flops <= MAX_FLOPS) {
            return Err(SearchError::invalid(format!(
                "budget.max_flops must be 0 (no limit) or a positive number up to {MAX_FLOPS:e}, got {max_flops}"
            )));
        }
        self.max_flops = Some(max_flops);
        Ok(self)
    }
}

/// Compute spent on one query.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub generations: u32,
    pub generator_tokens: u64,
    pub verifier_tokens: u64,
    /// `generator_flops + verifier_flops`.
    pub flops: f64,
    pub generator_flops: f64,
    pub verifier_flops: f64,
    /// Prompt tokens the generators processed, cached ones included (a split call's
    /// prompt counts once per part).
    pub prompt_tokens: u64,
    pub cached_prompt_tokens: u64,
}

impl Usage {
    pub fn tokens(&self) -> u64 {
        self.generator_tokens + self.verifier_tokens
    }

    /// Books generator FLOPs (into the total too).
    pub fn add_generator_flops(&mut self, flops: f64) {
        self.generator_flops += flops;
        self.flops += flops;
    }

    /// Books verifier FLOPs (into the total too).
    pub fn add_verifier_flops(&mut self, flops: f64) {
        self.verifier_flops += flops;
        self.flops += flops;
    }

    /// Adds everything `other` spent.
    pub fn add(&mut self, other: &Usage) {
        self.generations += other.generations;
        self.generator_tokens += other.generator_tokens;
        self.verifier_tokens += other.verifier_tokens;
        self.flops += other.flops;
        self.generator_flops += other.generator_flops;
        self.verifier_flops += other.verifier_flops;
        self.prompt_tokens += other.prompt_tokens;
        self.cached_prompt_tokens += other.cached_prompt_tokens;
    }
}

/// What a reservation holds until it is booked or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reservation {
    pub generations: u32,
    pub tokens: u64,
    /// Generator plus verifier FLOPs at the worst case.
    pub flops: f64,
}

/// Rounding slack of FLOPs arithmetic, relative to the budget.
const FLOPS_TOLERANCE: f64 = 1e-9;

/// Tracks spent and reserved compute against a [`Budget`].
#[derive(Debug, Clone)]
pub struct Ledger {
    budget: Budget,
    /// The generations granted: the budget's maximum, or less under a load-adaptive
    /// grant ([`Ledger::set_granted`]).
    granted: u32,
    used: Usage,
    reserved: Reservation,
}

impl Ledger {
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            granted: budget.max_generations,
            used: Usage::default(),
            reserved: Reservation::default(),
        }
    }

    /// Sets the generations granted, within the budget's floor and maximum (returns
    /// the value set). Lowering it below what is spent and reserved stops new work; it
    /// never takes back what was spent.
    pub fn set_granted(&mut self, generations: u32) -> u32 {
        self.granted = generations.clamp(self.budget.min_generations, self.budget.max_generations);
        self.granted
    }

    pub fn granted(&self) -> u32 {
        self.granted
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn used(&self) -> Usage {
        self.used
    }

    pub fn generations_left(&self) -> u32 {
        self.granted
            .saturating_sub(self.used.generations + self.reserved.generations)
    }

    /// Tokens neither spent nor reserved; `u64::MAX` without a token limit.
    pub fn tokens_left(&self) -> u64 {
        match self.budget.max_tokens {
            Some(max) => max - self.used.tokens() - self.reserved.tokens,
            None => u64::MAX,
        }
    }

    /// FLOPs neither spent nor reserved; infinite without a FLOPs limit.
    pub fn flops_left(&self) -> f64 {
        match self.budget.max_flops {
            Some(max) => (max - self.used.flops - self.reserved.flops).max(0.0),
            None => f64::INFINITY,
        }
    }

    pub fn expired(&self) -> bool {
        self.budget.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether `want` fits what is neither spent nor reserved.
    pub fn fits(&self, want: &Reservation) -> bool {
        let flops_slack = self.budget.max_flops.unwrap_or(0.0) * FLOPS_TOLERANCE;
        want.generations <= self.generations_left()
            && want.tokens <= self.tokens_left()
            && want.flops <= self.flops_left() + flops_slack
    }

    /// Reserves worst-case cost, or returns None if it does not fit.
    pub fn reserve(&mut self, want: Reservation) -> Option<Reservation> {
        if !self.fits(&want) {
            return None;
        }
        self.reserved.generations += want.generations;
        self.reserved.tokens += want.tokens;
        self.reserved.flops += want.flops;
        Some(want)
    }

    /// Releases a reservation and books what the work really cost (never more than
    /// was reserved: the caller bounds it).
    pub fn settle(&mut self, held: Reservation, spent: Usage) {
        self.reserved.generations -= held.generations;
        self.reserved.tokens -= held.tokens;
        self.reserved.flops = (self.reserved.flops - held.flops).max(0.0);
        debug_assert!(spent.generations <= held.generations);
        debug_assert!(spent.tokens() <= held.tokens);
        debug_assert!(
            spent.flops <= held.flops * (1.0 + FLOPS_TOLERANCE) + 1.0,
            "spent {} FLOPs of {} reserved",
            spent.flops,
            held.flops
        );
        self.used.add(&spent);
    }

    /// Releases a reservation for work that failed before spending anything.
    pub fn release(&mut self, held: Reservation) {
        self.settle(held, Usage::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_pass_the_limits() {
        let mut l = Ledger::new(Budget::new(4, 100, None).unwrap());
        let a = l
            .reserve(Reservation {
                generations: 3,
                tokens: 60,
                ..Default::default()
            })
            .unwrap();
        assert!(l
            .reserve(Reservation {
                generations: 2,
                tokens: 10,
                ..Default::default()
            })
            .is_none());
        assert!(l
            .reserve(Reservation {
                generations: 1,
                tokens: 41,
                ..Default::default()
            })
            .is_none());
        l.settle(
            a,
            Usage {
                generations: 3,
                generator_tokens: 30,
                verifier_tokens: 5,
                ..Default::default()
            },
        );
        assert_eq!(l.tokens_left(), 65);
        assert_eq!(l.generations_left(), 1);
    }

    #[test]
    fn bad_budgets_say_what_to_fix() {
        for (g, t) in [(0, 0), (5000, 0), (4, 10), (4, u64::MAX)] {
            let e = Budget::new(g, t, None).unwrap_err();
            assert!(matches!(e, SearchError::Invalid(m) if m.contains("budget.")));
        }
        assert_eq!(Budget::new(8, 0, None).unwrap().max_tokens, None);
        let b = Budget::new(8, 0, None).unwrap();
        for bad in [-1.0, f64::NAN, f64::INFINITY, 2e21] {
            let e = b.with_max_flops(bad).unwrap_err();
            assert!(matches!(e, SearchError::Invalid(m) if m.contains("budget.max_flops")));
        }
        assert_eq!(b.with_max_flops(0.0).unwrap().max_flops, None);
    }

    #[test]
    fn a_grant_stays_between_floor_and_maximum_and_never_takes_back_spending() {
        let budget = Budget::new(16, 0, None)
            .unwrap()
            .with_min_generations(2)
            .unwrap();
        let mut l = Ledger::new(budget);
        assert_eq!(l.granted(), 16, "a fresh ledger grants the maximum");
        assert_eq!(l.set_granted(0), 2, "never below the floor");
        assert_eq!(l.set_granted(100), 16, "never above the maximum");
        let held = l
            .reserve(Reservation {
                generations: 8,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(l.set_granted(4), 4);
        assert_eq!(
            l.generations_left(),
            0,
            "8 reserved of 4 granted: no new work"
        );
        l.settle(
            held,
            Usage {
                generations: 8,
                ..Default::default()
            },
        );
        assert_eq!(l.used().generations, 8, "what was spent stays spent");
        l.set_granted(12);
        assert_eq!(l.generations_left(), 4);
        let e = Budget::new(4, 0, None)
            .unwrap()
            .with_min_generations(5)
            .unwrap_err();
        assert!(e.to_string().contains("budget.min_generations"));
        assert_eq!(
            Budget::new(4, 0, None)
                .unwrap()
                .with_min_generations(0)
                .unwrap()
                .min_generations,
            1
        );
    }

    #[test]
    fn flops_reservations_never_pass_the_limit() {
        let budget = Budget::new(100, 0, None)
            .unwrap()
            .with_max_flops(1000.0)
            .unwrap();
        let mut l = Ledger::new(budget);
        let flops = |f: f64| Reservation {
            flops: f,
            ..Default::default()
        };
        let a = l.reserve(flops(600.0)).unwrap();
        assert!(l.reserve(flops(401.0)).is_none(), "600 + 401 > 1000");
        let b = l.reserve(flops(400.0)).unwrap();
        let mut spent = Usage::default();
        spent.add_generator_flops(250.0);
        spent.add_verifier_flops(100.0);
        l.settle(a, spent);
        assert_eq!(l.flops_left(), 250.0, "1000 - 350 spent - 400 reserved");
        l.release(b);
        assert_eq!(l.flops_left(), 650.0);
        let used = l.used();
        assert_eq!(
            (used.flops, used.generator_flops, used.verifier_flops),
            (350.0, 250.0, 100.0)
        );
    }
}
