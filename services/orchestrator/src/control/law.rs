//! The control law, as pure functions of numbers so that tests can assert it exactly.
//!
//! Why a price: granting each query in flight the budget that maximises the expected
//! correct answers of all of them, under the cluster's capacity, is a knapsack whose
//! Lagrangian solution is one number, the shadow price of a generation in accuracy.
//! Each query then takes the budget `b` that maximises `accuracy(b) - price * b` on the
//! curve of its predicted difficulty bin: questions whose curve still climbs (hard but
//! solvable) keep more, easy ones (already right at 1) and hopeless ones (flat) less.
//! The price is not solved for; it is read off the measured load, which is what the
//! grants change: an idle cluster prices generations at 0 (everyone gets the maximum),
//! and the price rises geometrically from `price_low` to `price_high` as the load goes
//! from `load_low` to `load_high`, where every query is at its floor.

use ponder_search::grant::{Grant, GrantReason};

/// The law's parameters (flags of `ponder-orchestrator`, docs/load-adaptive.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LawParams {
    /// Load at or below which generations are free: every grant is the maximum.
    pub load_low: f64,
    /// Load at or above which every grant is its floor.
    pub load_high: f64,
    /// The price (accuracy per generation) just above `load_low`, and at `load_high`.
    pub price_low: f64,
    pub price_high: f64,
}

impl Default for LawParams {
    fn default() -> Self {
        Self {
            load_low: 0.5,
            load_high: 2.0,
            price_low: 1e-4,
            price_high: 0.05,
        }
    }
}

impl LawParams {
    pub fn check(&self) -> Result<(), String> {
        let ok = self.load_low >= 0.0
            && self.load_high > self.load_low
            && self.load_high.is_finite()
            && self.price_low > 0.0
            && self.price_high >= self.price_low
            && self.price_high.is_finite();
        if ok {
            Ok(())
        } else {
            Err(format!(
                "budget control needs 0 <= --load-low < --load-high and 0 < price_low <= price_high, got {self:?}"
            ))
        }
    }

    /// The price of a generation at `load`: 0 at or below `load_low`, infinite at or
    /// above `load_high`, geometric in between.
    pub fn price(&self, load: f64) -> f64 {
        if load <= self.load_low {
            return 0.0;
        }
        if load >= self.load_high {
            return f64::INFINITY;
        }
        let x = (load - self.load_low) / (self.load_high - self.load_low);
        self.price_low * (self.price_high / self.price_low).powf(x)
    }
}

/// The queue-threshold switch, a baseline to measure the law against
/// (docs/load-adaptive.md): the maximum below load `at_load`, else `budget` (within
/// the query's floor and maximum), whatever the question.
pub fn switch(load: f64, at_load: f64, budget: u32, max: u32, floor: u32) -> Grant {
    if load < at_load {
        return Grant {
            generations: max,
            reason: GrantReason::Idle,
        };
    }
    let floor = floor.clamp(1, max.max(1));
    let generations = budget.clamp(floor, max.max(floor));
    Grant {
        generations,
        reason: if generations == floor && floor < max {
            GrantReason::Floor
        } else {
            GrantReason::Load
        },
    }
}

/// A curve for a policy without fitted accuracy (schema 1): a gain of 2 points per
/// doubling, the same for every question. Grants then follow load alone.
pub fn fallback_curve() -> Vec<(u32, f64)> {
    (0..=8).map(|k| (1 << k, 0.02 * k as f64)).collect()
}

/// The accuracy `curve` ((generations, accuracy), ascending) gives a budget of `b`: the
/// point of the largest budget <= `b` (more generations than a point are not assumed to
/// buy more), or the first point's accuracy below it.
pub(crate) fn accuracy_at(curve: &[(u32, f64)], b: u32) -> f64 {
    curve
        .iter()
        .rev()
        .find(|(g, _)| *g <= b)
        .or(curve.first())
        .map_or(0.0, |(_, a)| *a)
}

/// The grant for a query with `max` and `floor` at `price`: the budget in
/// `{floor, the curve's budgets in [floor, max], max}` that maximises
/// `accuracy(b) - price * b` (ties: the smaller). At price 0 the maximum ("idle"); at an
/// infinite price the floor.
pub fn grant(curve: &[(u32, f64)], price: f64, max: u32, floor: u32) -> Grant {
    let floor = floor.clamp(1, max.max(1));
    if price <= 0.0 {
        return Grant {
            generations: max,
            reason: GrantReason::Idle,
        };
    }
    let at_floor = Grant {
        generations: floor,
        reason: GrantReason::Floor,
    };
    if !price.is_finite() || floor == max {
        return at_floor;
    }
    let candidates = std::iter::once(floor)
        .chain(
            curve
                .iter()
                .map(|(g, _)| *g)
                .filter(|g| (floor..=max).contains(g)),
        )
        .chain(std::iter::once(max));
    let mut best = (floor, f64::NEG_INFINITY);
    for b in candidates {
        let value = accuracy_at(curve, b) - price * b as f64;
        if value > best.1 + 1e-12 || (value >= best.1 - 1e-12 && b < best.0) {
            best = (b, value);
        }
    }
    if best.0 == floor {
        at_floor
    } else {
        Grant {
            generations: best.0,
            reason: GrantReason::Load,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> LawParams {
        LawParams::default()
    }

    #[test]
    fn the_price_is_zero_when_idle_geometric_under_load_and_infinite_at_the_top() {
        let p = params();
        assert_eq!(p.price(0.0), 0.0);
        assert_eq!(p.price(0.5), 0.0);
        assert!((p.price(0.5 + 1e-12) - 1e-4).abs() < 1e-9);
        // Halfway in load is the geometric mean of the prices.
        assert!((p.price(1.25) - (1e-4f64 * 0.05).sqrt()).abs() < 1e-12);
        assert_eq!(p.price(2.0), f64::INFINITY);
        assert!(p.check().is_ok());
        let bad = LawParams {
            load_high: 0.4,
            ..p
        };
        assert!(bad.check().unwrap_err().contains("--load-low"));
    }

    /// Curves shaped like the bundled policy's bins: an easy bin right at 1, a
    /// middle bin that climbs to 16, a hopeless bin that stays flat.
    fn easy() -> Vec<(u32, f64)> {
        vec![
            (1, 0.97),
            (2, 0.97),
            (4, 0.98),
            (8, 0.98),
            (16, 0.98),
            (64, 0.98),
        ]
    }
    fn middle() -> Vec<(u32, f64)> {
        vec![
            (1, 0.40),
            (2, 0.50),
            (4, 0.62),
            (8, 0.72),
            (16, 0.80),
            (64, 0.82),
        ]
    }
    fn hopeless() -> Vec<(u32, f64)> {
        vec![
            (1, 0.05),
            (2, 0.05),
            (4, 0.06),
            (8, 0.06),
            (16, 0.06),
            (64, 0.06),
        ]
    }

    #[test]
    fn grants_follow_the_marginal_accuracy_of_the_bin() {
        let g = |c: &[(u32, f64)], price| grant(c, price, 64, 1);
        // Idle: everyone the maximum.
        for c in [easy(), middle(), hopeless()] {
            assert_eq!(
                g(&c, 0.0),
                Grant {
                    generations: 64,
                    reason: GrantReason::Idle
                }
            );
        }
        // A price of 0.005 accuracy per generation: the middle bin's step 8 -> 16 gains
        // 0.08 for 8 more (0.01 each) and is kept; 16 -> 64 gains 0.02 for 48 is not.
        assert_eq!(
            g(&middle(), 0.005),
            Grant {
                generations: 16,
                reason: GrantReason::Load
            }
        );
        // The easy bin's 0.01 from 1 to 4 costs 3 x 0.005: not worth it.
        assert_eq!(g(&easy(), 0.005).generations, 1);
        assert_eq!(g(&easy(), 0.005).reason, GrantReason::Floor);
        assert_eq!(g(&hopeless(), 0.005).generations, 1);
        // A higher price keeps fewer of the middle bin's: 4 -> 8 gains 0.025 per
        // generation, 8 -> 16 0.01, 2 -> 4 0.06, 1 -> 2 0.1.
        assert_eq!(g(&middle(), 0.02).generations, 8);
        assert_eq!(g(&middle(), 0.04).generations, 4);
        assert_eq!(g(&middle(), 0.07).generations, 2);
        // The cheapest price keeps the whole climb of the middle bin but not 64.
        assert_eq!(g(&middle(), 1e-4).generations, 64);
        assert_eq!(g(&middle(), 5e-4).generations, 16);
    }

    #[test]
    fn the_switch_cuts_every_question_alike_at_its_threshold() {
        assert_eq!(switch(0.99, 1.0, 4, 16, 1).generations, 16);
        assert_eq!(
            switch(1.0, 1.0, 4, 16, 1),
            Grant {
                generations: 4,
                reason: GrantReason::Load
            }
        );
        assert_eq!(
            switch(3.0, 1.0, 4, 2, 1).generations,
            2,
            "never above the maximum"
        );
        assert_eq!(
            switch(3.0, 1.0, 4, 16, 8),
            Grant {
                generations: 8,
                reason: GrantReason::Floor
            }
        );
    }

    #[test]
    fn a_grant_is_never_above_the_maximum_nor_below_the_floor() {
        for price in [0.0, 1e-5, 1e-3, 0.01, 0.1, 1.0, f64::INFINITY] {
            for (max, floor) in [(1, 1), (3, 1), (16, 4), (64, 8), (100, 2), (5, 5)] {
                for c in [easy(), middle(), hopeless(), fallback_curve(), vec![]] {
                    let got = grant(&c, price, max, floor).generations;
                    assert!(
                        (floor..=max).contains(&got),
                        "price {price} max {max} floor {floor}: {got}"
                    );
                }
            }
        }
        // A maximum between the curve's budgets is a candidate of its own.
        assert_eq!(grant(&middle(), 0.0, 12, 1).generations, 12);
        assert_eq!(grant(&middle(), 0.02, 12, 1).generations, 8);
        // At the top of the load range: the floor.
        assert_eq!(
            grant(&middle(), f64::INFINITY, 64, 4),
            Grant {
                generations: 4,
                reason: GrantReason::Floor
            }
        );
    }
}
