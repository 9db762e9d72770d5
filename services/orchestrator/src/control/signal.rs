//! The load the controller reads: four signals, each scaled so that 1 means "at
//! capacity", and their maximum as the load.
//!
//! - **admission**: queries in progress over `--max-queries`;
//! - **queries**: queries in progress over `--queries-per-node` per serving generator
//!   node (the concurrency at the knee of the cluster: `ponder-load sweep` measures it);
//! - **backlog**: requests waiting on the workers *from other orchestrators*: a node's
//!   own reported queue depth beyond this orchestrator's calls in flight to it, over
//!   `--backlog-target` per node, for the busier role (a single orchestrator sees none);
//! - **latency**: the 90th percentile latency of the queries that finished in the last
//!   [`LATENCY_WINDOW`] over `--slo` (none finished, or no `--slo`: 0).
//!
//! Why not this orchestrator's own calls in the queues: one query with a large budget
//! keeps several waves in flight by itself, which is not overload; counted as load it
//! would cut its own budget on an idle cluster. Its own work is counted in queries.
//! Why the maximum: each signal alone misses a way of being overloaded (other replicas
//! fill the queues this one cannot see in its query count; a slow model misses the
//! objective with few queries), and any one of them at 1 means more work would wait.

use ponder_cluster::{Member, Role};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far back finished queries count towards the latency signal.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadSignal {
    pub admission: f64,
    pub queries: f64,
    pub backlog: f64,
    pub latency: f64,
}

impl LoadSignal {
    /// The load: the largest of the signals.
    pub fn load(&self) -> f64 {
        self.admission
            .max(self.queries)
            .max(self.backlog)
            .max(self.latency)
    }

    pub fn parts(&self) -> [(&'static str, f64); 4] {
        [
            ("admission", self.admission),
            ("queries", self.queries),
            ("backlog", self.backlog),
            ("latency", self.latency),
        ]
    }
}

fn serving(m: &Member, role: Role) -> bool {
    m.record.role == role && m.info.get().is_some() && !m.is_ejected()
}

/// Generator nodes serving now (answered ModelInfo, not ejected).
pub fn generator_nodes(members: &[Arc<Member>]) -> usize {
    members
        .iter()
        .filter(|m| serving(m, Role::Generator))
        .count()
}

/// Queries in progress over `per_node` per serving generator node (at least one node).
pub fn queries(members: &[Arc<Member>], in_progress: usize, per_node: f64) -> f64 {
    let nodes = generator_nodes(members).max(1);
    in_progress as f64 / (nodes as f64 * per_node)
}

/// Other orchestrators' requests waiting per node, over `target`, for the busier role
/// (0 without members).
pub fn backlog(members: &[Arc<Member>], target: f64) -> f64 {
    [Role::Generator, Role::Verifier]
        .into_iter()
        .map(|role| {
            let of_role: Vec<u32> = members
                .iter()
                .filter(|m| serving(m, role))
                .map(|m| m.foreign_backlog())
                .collect();
            if of_role.is_empty() {
                0.0
            } else {
                of_role.iter().map(|&b| b as f64).sum::<f64>() / (of_role.len() as f64 * target)
            }
        })
        .fold(0.0, f64::max)
}

/// The share of the fullest admission limit at which the capacity law's harm is 1.
pub const HARM_OCCUPANCY: f64 = 0.5;

/// What the capacity law divides its share by, above 1: the signals that measure harm
/// itself rather than estimate capacity. `fullest` is the fullest admission limit's
/// share in use (all slots, or the busiest client's): refusals are near, and at
/// [`HARM_OCCUPANCY`] of it the share starts to shrink (full slots halve it). `latency`
/// is the latency signal: the objective is being missed. Queries and backlog are
/// estimates of the capacity that `--capacity` replaces, read from queues that every
/// replica shares, so they do not price under that law.
pub fn harm(fullest: f64, latency: f64) -> f64 {
    (fullest / HARM_OCCUPANCY).max(latency)
}

/// Latencies of recently finished queries (owned by the controller's task).
#[derive(Debug, Default)]
pub struct LatencyWindow {
    finished: VecDeque<(Instant, f64)>,
}

impl LatencyWindow {
    pub fn record(&mut self, at: Instant, seconds: f64) {
        self.finished.push_back((at, seconds));
    }

    /// The 90th percentile of the window's latencies over `slo` (0 when the window is
    /// empty or `slo` is 0: latency not used), dropping what has left the window.
    pub fn pressure(&mut self, now: Instant, slo: f64) -> f64 {
        while self
            .finished
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > LATENCY_WINDOW)
        {
            self.finished.pop_front();
        }
        if self.finished.is_empty() || slo <= 0.0 {
            return 0.0;
        }
        let mut v: Vec<f64> = self.finished.iter().map(|(_, s)| *s).collect();
        v.sort_by(f64::total_cmp);
        let p90 = v[((v.len() - 1) as f64 * 0.9).round() as usize];
        p90 / slo
    }
}

/// Exponential smoothing with time constant `tau`: a step in the load moves the
/// smoothed value 1 - 1/e of the way in `tau`, whatever the tick.
pub fn smooth(previous: f64, now: f64, dt: Duration, tau: Duration) -> f64 {
    if tau.is_zero() {
        return now;
    }
    let a = 1.0 - (-dt.as_secs_f64() / tau.as_secs_f64()).exp();
    previous + a * (now - previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_is_the_largest_signal() {
        let s = LoadSignal {
            admission: 0.2,
            queries: 0.7,
            backlog: 1.4,
            latency: 0.9,
        };
        assert_eq!(s.load(), 1.4);
        let s = LoadSignal { queries: 2.5, ..s };
        assert_eq!(s.load(), 2.5);
        assert_eq!(LoadSignal::default().load(), 0.0);
    }

    #[test]
    fn harm_is_the_fullest_limit_over_half_or_the_latency_pressure() {
        assert_eq!(harm(0.25, 0.3), 0.5);
        assert_eq!(harm(1.0, 0.3), 2.0, "a full limit halves the share");
        assert_eq!(harm(0.2, 1.5), 1.5);
    }

    #[test]
    fn latency_pressure_is_the_windows_p90_over_the_objective() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::default();
        assert_eq!(w.pressure(t0, 10.0), 0.0, "nothing finished: no pressure");
        for i in 1..=10 {
            w.record(t0, i as f64);
        }
        assert_eq!(w.pressure(t0, 10.0), 0.9, "p90 of 1..=10 s is 9 s");
        assert_eq!(w.pressure(t0, 0.0), 0.0, "--slo 0: latency not used");
        let later = t0 + LATENCY_WINDOW + Duration::from_millis(1);
        assert_eq!(w.pressure(later, 10.0), 0.0, "the window forgets");
    }

    #[test]
    fn smoothing_moves_by_the_time_constant() {
        let tau = Duration::from_secs(1);
        let one = smooth(0.0, 1.0, tau, tau);
        assert!((one - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        let mut v = 0.0;
        for _ in 0..4 {
            v = smooth(v, 1.0, tau / 4, tau);
        }
        assert!((v - one).abs() < 1e-12, "four quarter ticks = one whole");
        assert_eq!(smooth(0.3, 2.0, tau, Duration::ZERO), 2.0);
    }
}
