//! The capacity law: a price solved from the generations the recent arrivals ask for,
//! against the generations per second the generator nodes serve (`--capacity`).
//!
//! Why: a price read from the load closes a loop through the queries' own run time. A
//! grant changes the load only once its query runs, so a steep law swings the price from
//! the maximum to the floor and back, every 12-20 s on the bundled models, and replicas
//! that read the same workers' queues swing together (docs/load-adaptive.md, "Several
//! orchestrators"). An open-loop client's arrivals do not depend on the grants. A price
//! solved from them has no such loop: it is the lowest price at which the expected
//! grants of what arrived in the last [`DEMAND_WINDOW`] fit this orchestrator's share of
//! the capacity. Fixed and priority queries cost their maximum and come off the top.
//! The measured harm still counts, as a correction of a capacity set too high: the
//! share is divided by how full the fullest admission limit is (over half) or by the
//! latency over the objective, where either is above 1 (`signal::harm`).

use super::Curves;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How far back arrivals count towards the demand: long enough that a Poisson stream of
/// a few queries per second gives a steady rate, short enough that a step in the
/// offered load is priced within a few seconds (the load signals cover the gap).
pub const DEMAND_WINDOW: Duration = Duration::from_secs(5);

/// The shortest span of arrivals a rate is read from.
const MIN_SPAN: Duration = Duration::from_secs(1);

/// The bracket the price is solved in (accuracy per generation). Below the lowest,
/// every curve's optimum is its maximum gain; above the highest no generation is worth
/// buying, since accuracy gains at most 1.
const PRICE_MIN: f64 = 1e-6;
const PRICE_MAX: f64 = 1.0;

/// What an arriving query may cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cost {
    /// Its maximum, whatever the load: a fixed budget or a priority key.
    Committed(u32),
    /// Between its floor and maximum, at the price; never less than the probes its
    /// strategy spends before its bin is known (0: a strategy that does not probe).
    Adaptive { max: u32, floor: u32, probes: u32 },
}

/// The arrivals of the last [`DEMAND_WINDOW`] (owned by the controller's task).
#[derive(Debug, Default)]
pub struct Demand {
    arrivals: VecDeque<(Instant, Cost)>,
}

/// The capacity law's reading at one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Priced {
    /// The lowest price at which the expected spend fits.
    pub price: f64,
    /// A price just below it, at which it does not, and the share of queries granted
    /// at that one: the curves' grants are steps, and mixing the two prices meets the
    /// capacity exactly instead of jumping a whole step below it.
    pub generous: f64,
    pub mix: f64,
    /// Generations per second the window's arrivals ask for at their maximum.
    pub asked: f64,
    /// Generations per second they are expected to spend at the mixed price.
    pub spent: f64,
}

impl Demand {
    pub fn record(&mut self, at: Instant, cost: Cost) {
        self.arrivals.push_back((at, cost));
    }

    /// The lowest price at which the expected grants of the window's arrivals fit
    /// `capacity` generations per second: 0 when their maximums fit, infinite when not
    /// even their floors do.
    pub fn price(&mut self, now: Instant, capacity: f64, curves: &Curves) -> Priced {
        while self
            .arrivals
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > DEMAND_WINDOW)
        {
            self.arrivals.pop_front();
        }
        // Arrivals per second: n over the window, or, when they span less of it (a
        // step up in the offered load, after a quiet spell), n - 1 over their span (at
        // least MIN_SPAN). Without the second, the first seconds of a step would be
        // priced at a fraction of their rate, and their grants would fill the queues.
        let n = self.arrivals.len() as f64;
        let span = self
            .arrivals
            .front()
            .map_or(Duration::ZERO, |(at, _)| now.saturating_duration_since(*at))
            .max(MIN_SPAN)
            .as_secs_f64();
        let per_second = (n / DEMAND_WINDOW.as_secs_f64()).max((n - 1.0).max(0.0) / span);
        // Arrivals with the same budget cost the same: priced once per kind (clients
        // send few distinct budgets), so a tick stays cheap at any arrival rate.
        let mut committed = 0.0;
        let mut adaptive: BTreeMap<(u32, u32, u32), f64> = BTreeMap::new();
        for (_, cost) in &self.arrivals {
            match *cost {
                Cost::Committed(g) => committed += g as f64,
                Cost::Adaptive { max, floor, probes } => {
                    *adaptive.entry((max, floor, probes)).or_default() += 1.0
                }
            }
        }
        // Generations per second at `price`: the arrivals' mean expected spend times
        // their rate.
        let rate = |price: f64| {
            let adaptive: f64 = adaptive
                .iter()
                .map(|(&(max, floor, probes), n)| {
                    n * curves.expected_spend(price, max, floor, probes)
                })
                .sum();
            (committed + adaptive) * per_second / n.max(1.0)
        };
        let asked = rate(0.0);
        // `generous` does not fit and `price` does: the mix of the two that meets the
        // capacity.
        let mixed = |generous: f64, price: f64| {
            let (over, fits) = (rate(generous), rate(price));
            let mix = if over > fits {
                ((capacity - fits) / (over - fits)).clamp(0.0, 1.0)
            } else {
                0.0
            };
            Priced {
                price,
                generous,
                mix,
                asked,
                spent: mix * over + (1.0 - mix) * fits,
            }
        };
        if asked <= capacity {
            return mixed(0.0, 0.0);
        }
        if rate(PRICE_MAX) > capacity {
            return mixed(f64::INFINITY, f64::INFINITY);
        }
        if rate(PRICE_MIN) <= capacity {
            return mixed(0.0, PRICE_MIN);
        }
        // The expected spend falls as the price rises (each query's optimum moves to a
        // smaller budget), so bisection in log price finds the lowest price that fits.
        let (mut low, mut high) = (PRICE_MIN.ln(), PRICE_MAX.ln());
        for _ in 0..40 {
            let mid = 0.5 * (low + high);
            if rate(mid.exp()) <= capacity {
                high = mid;
            } else {
                low = mid;
            }
        }
        mixed(low.exp(), high.exp())
    }
}

/// This orchestrator's share of the generators' capacity: `per_node` generations per
/// second on each serving generator node, split evenly between `replicas`
/// orchestrators, and divided by the measured `harm` where it is above 1.
pub fn share(per_node: f64, nodes: usize, replicas: u32, harm: f64) -> f64 {
    per_node * nodes.max(1) as f64 / replicas.max(1) as f64 / harm.max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two bins of equal weight: one right at 1 sample, one that climbs to 16.
    fn curves() -> Curves {
        let easy = vec![(1, 0.97), (4, 0.98), (16, 0.98)];
        let climbs = vec![(1, 0.40), (4, 0.62), (16, 0.80)];
        Curves::with_bins(vec![easy, climbs], vec![1.0, 1.0])
    }

    fn adaptive(probes: u32) -> Cost {
        Cost::Adaptive {
            max: 16,
            floor: 1,
            probes,
        }
    }

    /// 10 arrivals of `cost` half a second apart, and an instant 0.6 s after the last:
    /// all in the window, 2 per second.
    fn two_per_second(cost: Cost) -> (Demand, Instant) {
        let t0 = Instant::now();
        let mut d = Demand::default();
        for i in 0..10 {
            d.record(t0 + Duration::from_millis(500 * i), cost);
        }
        (d, t0 + Duration::from_millis(4600))
    }

    #[test]
    fn the_price_is_the_lowest_at_which_the_arrivals_fit_and_the_mix_meets_it() {
        // 10 adaptive queries of max 16 in the window: 2 per second, 32 generations per
        // second at their maximum.
        let (mut d, now) = two_per_second(adaptive(0));
        let c = curves();
        let p = d.price(now, 40.0, &c);
        assert_eq!((p.price, p.mix, p.asked, p.spent), (0.0, 0.0, 32.0, 32.0));
        // 20 per second: the lowest price fits exactly. It drops the easy bin's 16 to 4,
        // which gains nothing over 4 ((4 + 16) / 2 x 2 = 20 per second).
        let p = d.price(now, 20.0, &c);
        assert_eq!((p.price, p.mix, p.spent), (PRICE_MIN, 0.0, 20.0));
        // 18 per second: at 0.01 / 3 the easy bin drops to 1 (its step to 4 gains 0.01
        // for 3 more) and the climbing bin keeps 16: 17 per second. A third of the
        // queries get the price just below (20 per second): 18 on average.
        let p = d.price(now, 18.0, &c);
        assert!((p.price - 0.01 / 3.0).abs() < 1e-6, "{p:?}");
        assert!(p.generous < p.price && p.generous > p.price * 0.999_999);
        assert!((p.mix - 1.0 / 3.0).abs() < 1e-9, "{p:?}");
        assert!((p.spent - 18.0).abs() < 1e-9);
        // 10 per second: the climbing bin drops to 4 at 0.015 (its step 4 -> 16 gains
        // 0.18 for 12): 5 per second, and 5 / 12 of the queries keep 16.
        let p = d.price(now, 10.0, &c);
        assert!((p.price - 0.18 / 12.0).abs() < 1e-6, "{p:?}");
        assert!((p.mix - 5.0 / 12.0).abs() < 1e-9 && (p.spent - 10.0).abs() < 1e-9);
        // Below what the floors cost: every grant at its floor.
        let p = d.price(now, 1.0, &c);
        assert_eq!((p.price, p.mix, p.spent), (f64::INFINITY, 0.0, 2.0));
    }

    #[test]
    fn probes_are_spent_whatever_the_grant() {
        let (mut d, now) = two_per_second(adaptive(4));
        // While the pooled curve's first grant allows the 4 probes, each bin spends at
        // least 4: at 0.015 the climbing bin drops from 16 to 4, from 20 per second to 8,
        // and a third of the queries keep 16.
        let c = curves();
        let p = d.price(now, 12.0, &c);
        assert!((p.price - 0.18 / 12.0).abs() < 1e-6, "{p:?}");
        assert!((p.mix - 1.0 / 3.0).abs() < 1e-9 && (p.spent - 12.0).abs() < 1e-9);
        // Below 8 per second the probes themselves must go: the pooled curve (0.685 at
        // 1, 0.80 at 4) drops its first grant to 1 at 0.115 / 3, and the climbing bin
        // keeps 4 ((1 + 4) / 2 x 2 = 5 per second).
        let p = d.price(now, 7.0, &c);
        assert!((p.price - 0.115 / 3.0).abs() < 1e-6, "{p:?}");
        assert!((p.mix - 2.0 / 3.0).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn a_step_up_is_priced_at_its_rate_before_the_window_fills() {
        let t0 = Instant::now();
        let c = curves();
        // 21 queries in the last 2 s (10 per second): 20 intervals over 2 s, not 21
        // queries over 5 s.
        let mut d = Demand::default();
        for i in 0..=20 {
            d.record(t0 + Duration::from_millis(100 * i), adaptive(0));
        }
        let now = t0 + Duration::from_secs(2);
        assert!((d.price(now, 1e9, &c).asked - 160.0).abs() < 1e-9);
        // A lone query on an idle cluster is one per window, not one per second.
        let mut d = Demand::default();
        d.record(t0, adaptive(0));
        assert_eq!(
            d.price(t0 + Duration::from_millis(300), 1e9, &c).asked,
            16.0 / 5.0
        );
    }

    #[test]
    fn committed_queries_come_off_the_top_and_old_arrivals_are_forgotten() {
        let t0 = Instant::now();
        let mut d = Demand::default();
        d.record(t0, Cost::Committed(64));
        d.record(t0 + Duration::from_secs(4), adaptive(0));
        let t0 = t0 + Duration::from_millis(4500);
        let c = curves();
        // 64 / 5 s = 12.8 committed, 3.2 more at the adaptive query's maximum.
        let p = d.price(t0, 16.0, &c);
        assert_eq!((p.price, p.asked), (0.0, 16.0));
        assert!(d.price(t0, 15.0, &c).price > 0.0);
        // Only committed work over the capacity: nothing adaptive can fit.
        assert_eq!(d.price(t0, 12.0, &c).price, f64::INFINITY);
        // After the window nothing is asked.
        let later = t0 + DEMAND_WINDOW;
        let p = d.price(later, 0.5, &c);
        assert_eq!((p.price, p.asked), (0.0, 0.0));
    }

    #[test]
    fn the_share_splits_the_nodes_capacity_between_replicas_and_yields_to_load() {
        assert_eq!(share(80.0, 3, 1, 0.4), 240.0);
        assert_eq!(share(80.0, 3, 4, 1.0), 60.0);
        assert_eq!(
            share(80.0, 0, 0, 2.0),
            40.0,
            "at least one node and one replica"
        );
    }
}
