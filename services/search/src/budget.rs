//! The per-query compute budget and the ledger that enforces it.
//!
//! A budget has up to three limits: generations (the paper's unit), tokens (generator
//! plus verifier) and a deadline. Work is *reserved* at its worst-case cost before it
//! is started and *booked* at its real cost when it returns, so the sum of what was
//! spent can never pass a limit, even with several calls in flight.

use crate::error::{Result, SearchError};
use std::time::Instant;

pub const MAX_GENERATIONS: u32 = 4096;
pub const MIN_TOKENS: u64 = 64;
pub const MAX_TOKENS: u64 = 1 << 32;
pub const DEFAULT_GENERATIONS: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub max_generations: u32,
    /// None: no token limit.
    pub max_tokens: Option<u64>,
    pub deadline: Option<Instant>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_generations: DEFAULT_GENERATIONS,
            max_tokens: None,
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
            max_tokens: (max_tokens != 0).then_some(max_tokens),
            deadline,
        })
    }
}

/// Compute spent on one query.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub generations: u32,
    pub generator_tokens: u64,
    pub verifier_tokens: u64,
    pub flops: f64,
    pub cached_prompt_tokens: u64,
}

impl Usage {
    pub fn tokens(&self) -> u64 {
        self.generator_tokens + self.verifier_tokens
    }
}

/// What a reservation holds until it is booked or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    pub generations: u32,
    pub tokens: u64,
}

/// Tracks spent and reserved compute against a [`Budget`].
#[derive(Debug, Clone)]
pub struct Ledger {
    budget: Budget,
    used: Usage,
    reserved: Reservation,
}

impl Ledger {
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            used: Usage::default(),
            reserved: Reservation::default(),
        }
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn used(&self) -> Usage {
        self.used
    }

    pub fn generations_left(&self) -> u32 {
        self.budget.max_generations - self.used.generations - self.reserved.generations
    }

    /// Tokens neither spent nor reserved; `u64::MAX` without a token limit.
    pub fn tokens_left(&self) -> u64 {
        match self.budget.max_tokens {
            Some(max) => max - self.used.tokens() - self.reserved.tokens,
            None => u64::MAX,
        }
    }

    pub fn expired(&self) -> bool {
        self.budget.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Reserves worst-case cost, or returns None if it does not fit.
    pub fn reserve(&mut self, want: Reservation) -> Option<Reservation> {
        if want.generations > self.generations_left() || want.tokens > self.tokens_left() {
            return None;
        }
        self.reserved.generations += want.generations;
        self.reserved.tokens += want.tokens;
        Some(want)
    }

    /// Releases a reservation and books what the work really cost (never more than
    /// was reserved: the caller bounds it).
    pub fn settle(&mut self, held: Reservation, spent: Usage) {
        self.reserved.generations -= held.generations;
        self.reserved.tokens -= held.tokens;
        debug_assert!(spent.generations <= held.generations);
        debug_assert!(spent.tokens() <= held.tokens);
        self.used.generations += spent.generations;
        self.used.generator_tokens += spent.generator_tokens;
        self.used.verifier_tokens += spent.verifier_tokens;
        self.used.flops += spent.flops;
        self.used.cached_prompt_tokens += spent.cached_prompt_tokens;
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
            })
            .unwrap();
        assert!(l
            .reserve(Reservation {
                generations: 2,
                tokens: 10
            })
            .is_none());
        assert!(l
            .reserve(Reservation {
                generations: 1,
                tokens: 41
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
    }
}
