//! When to send in an open loop.
//!
//! The schedule is a sequence of *absolute* offsets from the start of the run, drawn from
//! a seeded RNG and summed in floating point. The driver sleeps until each offset, so
//! timer jitter (tokio's timers tick in milliseconds) or a slow send delays at most that
//! one send and never shifts the ones after it: the achieved rate stays the target rate.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The distribution of the gaps between two sends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Gamma-distributed gaps with shape `burstiness` and mean `1/rate` (the convention of
    /// vLLM's benchmark): 1.0 is a Poisson process (exponential gaps), below 1 is
    /// burstier, above 1 more regular.
    Gamma { burstiness: f64 },
    /// Equal gaps of `1/rate` (wrk2's schedule).
    Constant,
}

impl Arrivals {
    pub const POISSON: Arrivals = Arrivals::Gamma { burstiness: 1.0 };

    pub fn label(&self) -> String {
        match self {
            Arrivals::Gamma { burstiness } if *burstiness == 1.0 => "poisson".into(),
            Arrivals::Gamma { burstiness } => format!("gamma (burstiness {burstiness})"),
            Arrivals::Constant => "constant".into(),
        }
    }
}

/// An endless, seeded sequence of send offsets; the first send is at zero.
pub struct Schedule {
    gaps: Gaps,
    rng: ChaCha8Rng,
    next_s: f64,
}

enum Gaps {
    Constant(f64),
    Gamma(Gamma<f64>),
}

impl Schedule {
    /// `rate` in requests per second.
    pub fn new(rate: f64, arrivals: Arrivals, seed: u64) -> anyhow::Result<Schedule> {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "the rate must be a positive number of requests per second, got {rate}"
        );
        let gaps = match arrivals {
            Arrivals::Constant => Gaps::Constant(1.0 / rate),
            Arrivals::Gamma { burstiness } => {
                anyhow::ensure!(
                    burstiness.is_finite() && burstiness > 0.0,
                    "--burstiness must be a positive number (1.0 = Poisson), got {burstiness}"
                );
                Gaps::Gamma(Gamma::new(burstiness, 1.0 / (rate * burstiness))?)
            }
        };
        Ok(Schedule {
            gaps,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_s: 0.0,
        })
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let at = Duration::from_secs_f64(self.next_s);
        self.next_s += match &self.gaps {
            Gaps::Constant(gap) => *gap,
            Gaps::Gamma(g) => g.sample(&mut self.rng),
        };
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_and_cv(arrivals: Arrivals) -> (f64, f64) {
        let offsets: Vec<f64> = Schedule::new(10.0, arrivals, 7)
            .unwrap()
            .take(20_001)
            .map(|d| d.as_secs_f64())
            .collect();
        let gaps: Vec<f64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn gaps_have_the_rate_and_the_burstiness_asked_for() {
        // Gamma with shape k has a coefficient of variation of 1/sqrt(k).
        for (arrivals, cv) in [
            (Arrivals::POISSON, 1.0),
            (Arrivals::Gamma { burstiness: 0.25 }, 2.0),
            (Arrivals::Gamma { burstiness: 4.0 }, 0.5),
            (Arrivals::Constant, 0.0),
        ] {
            let (m, c) = mean_and_cv(arrivals);
            assert!((m - 0.1).abs() < 0.1 * 0.05, "{arrivals:?}: mean gap {m}");
            assert!((c - cv).abs() < 0.08, "{arrivals:?}: cv {c}, expected {cv}");
        }
    }

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        let a: Vec<_> = Schedule::new(5.0, Arrivals::POISSON, 1)
            .unwrap()
            .take(50)
            .collect();
        let b: Vec<_> = Schedule::new(5.0, Arrivals::POISSON, 1)
            .unwrap()
            .take(50)
            .collect();
        let c: Vec<_> = Schedule::new(5.0, Arrivals::POISSON, 2)
            .unwrap()
            .take(50)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a[0], Duration::ZERO);
    }

    #[test]
    fn bad_rates_are_refused_with_the_reason() {
        let e = Schedule::new(0.0, Arrivals::POISSON, 0).err().unwrap();
        assert!(e.to_string().contains("positive"), "{e}");
        let e = Schedule::new(1.0, Arrivals::Gamma { burstiness: -1.0 }, 0)
            .err()
            .unwrap();
        assert!(e.to_string().contains("--burstiness"), "{e}");
    }
}
