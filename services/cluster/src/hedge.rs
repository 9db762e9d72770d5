//! Hedged calls: when a call to a member has taken longer than most calls of its role,
//! a copy goes to another member, and the first answer wins (Dean and Barroso, "The
//! Tail at Scale", CACM 2013).
//!
//! Why: a member that is listed but cannot answer in time (cut off by a partition while
//! it keeps its etcd lease, behind a slow or lossy link, stopped) otherwise holds every
//! call routed to it: until the HTTP/2 keep-alive gives up (about 4 s) when it is cut
//! off, and for as long as it takes when it is merely slow. Query affinity sends all of
//! a query's rounds to the same member, so one such member would slow every query whose
//! key ranks it first. Calls are seeded, so both copies return the same samples and
//! either answer is the answer.
//!
//! The delay is the role's recent [`HEDGE_QUANTILE`] call latency (at least
//! [`MIN_HEDGE_DELAY`]), so a healthy cluster hedges about one call in twenty. Hedges
//! spend the orchestrator's retry budget: when every member is slow (overload), hedges
//! stop instead of doubling the load. The latency is kept per role, not per model or
//! call size: the calls a role serves are mixed alike on every member, and a hedge of a
//! call that is large rather than stuck costs one copy's work and changes no answer.

use crate::member::Role;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The share of a role's calls that answer before their hedge would be sent.
pub const HEDGE_QUANTILE: f64 = 0.95;
/// No hedge is sent sooner than this after its call.
pub const MIN_HEDGE_DELAY: Duration = Duration::from_millis(50);
/// Calls a role must have answered before its calls are hedged.
const MIN_CALLS: u32 = 32;
/// Latency buckets: four per doubling from 1 ms, so a bucket is at most 19% wide;
/// bucket `i` holds [2^(i/4), 2^((i+1)/4)) ms, the last everything from 2^20 ms up.
const BUCKETS: usize = 80;
/// The quantile is read again every this many answers.
const REFRESH_EVERY: u32 = 16;
/// Every this many answers the counts halve, so the quantile follows recent calls.
const DECAY_EVERY: u32 = 1024;

/// Hedging for every pool of one orchestrator: on or off, and each role's latency.
#[derive(Debug)]
pub struct Hedging {
    enabled: bool,
    generator: LatencyQuantile,
    verifier: LatencyQuantile,
}

impl Hedging {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            generator: LatencyQuantile::default(),
            verifier: LatencyQuantile::default(),
        }
    }

    fn of(&self, role: Role) -> Option<&LatencyQuantile> {
        match role {
            Role::Generator => Some(&self.generator),
            Role::Verifier => Some(&self.verifier),
            Role::Orchestrator => None,
        }
    }

    /// Records how long an answered call to a `role` member took.
    pub fn record(&self, role: Role, took: Duration) {
        if let Some(q) = self.of(role) {
            q.record(took);
        }
    }

    /// How long a call to a `role` member may run before it is hedged; None when
    /// hedging is off or the role has answered too few calls to know.
    pub fn delay(&self, role: Role) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        self.of(role)?.delay()
    }
}

impl Default for Hedging {
    /// On.
    fn default() -> Self {
        Self::new(true)
    }
}

/// What [`race`] saw: the calls that finished, in the order they did (the last one
/// answered, or every one failed), and whether a copy was sent.
pub struct Raced<O> {
    pub outcomes: Vec<O>,
    pub hedged: bool,
}

/// Runs `first`. If it has not finished after `delay` (None: never hedge), `hedge` may
/// start a copy (None: no copy, e.g. no other member or no budget), and the two race:
/// the first outcome that `answered` wins and the other is dropped (cancelled); a
/// failed one waits for the other.
pub async fn race<O, F, H>(
    first: F,
    delay: Option<Duration>,
    hedge: impl FnOnce() -> Option<H>,
    answered: impl Fn(&O) -> bool,
) -> Raced<O>
where
    F: Future<Output = O>,
    H: Future<Output = O>,
{
    let unhedged = |outcome| Raced {
        outcomes: vec![outcome],
        hedged: false,
    };
    let Some(delay) = delay else {
        return unhedged(first.await);
    };
    tokio::pin!(first);
    tokio::select! {
        done = &mut first => return unhedged(done),
        () = tokio::time::sleep(delay) => {}
    }
    let Some(second) = hedge() else {
        return unhedged(first.await);
    };
    tokio::pin!(second);
    let outcomes = tokio::select! {
        a = &mut first => match answered(&a) {
            true => vec![a],
            false => vec![a, second.await],
        },
        b = &mut second => match answered(&b) {
            true => vec![b],
            false => vec![b, first.await],
        },
    };
    Raced {
        outcomes,
        hedged: true,
    }
}

/// A decaying histogram of call latencies and its [`HEDGE_QUANTILE`], shared by every
/// call of a role without a lock (a lost update under a race costs one sample).
#[derive(Debug)]
struct LatencyQuantile {
    buckets: [AtomicU32; BUCKETS],
    answered: AtomicU32,
    /// The quantile in µs (0: not known yet).
    quantile_us: AtomicU64,
}

impl Default for LatencyQuantile {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
            answered: AtomicU32::new(0),
            quantile_us: AtomicU64::new(0),
        }
    }
}

impl LatencyQuantile {
    fn record(&self, took: Duration) {
        let ms = took.as_secs_f64() * 1e3;
        let i = if ms <= 1.0 {
            0
        } else {
            ((ms.log2() * 4.0) as usize).min(BUCKETS - 1)
        };
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let answered = self
            .answered
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        if answered.is_multiple_of(DECAY_EVERY) {
            for b in &self.buckets {
                b.store(b.load(Ordering::Relaxed) / 2, Ordering::Relaxed);
            }
        }
        if answered >= MIN_CALLS && answered.is_multiple_of(REFRESH_EVERY) {
            self.refresh();
        }
    }

    /// The upper edge of the bucket where the quantile falls.
    fn refresh(&self) {
        let counts: [u64; BUCKETS] =
            std::array::from_fn(|i| u64::from(self.buckets[i].load(Ordering::Relaxed)));
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return;
        }
        let target = (total as f64 * HEDGE_QUANTILE).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                let upper_ms = 2f64.powf((i + 1) as f64 / 4.0);
                self.quantile_us
                    .store((upper_ms * 1e3) as u64, Ordering::Relaxed);
                return;
            }
        }
    }

    fn delay(&self) -> Option<Duration> {
        match self.quantile_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us).max(MIN_HEDGE_DELAY)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_is_the_recent_95th_percentile_once_enough_calls_answered() {
        let h = Hedging::default();
        for _ in 0..(MIN_CALLS - 1) {
            h.record(Role::Generator, Duration::from_millis(100));
        }
        assert_eq!(h.delay(Role::Generator), None, "too few calls to know");
        // 4% of calls take 2 s, the rest 100 ms: the 95th percentile is in 100 ms's
        // bucket.
        let h = Hedging::default();
        for i in 0..320 {
            let ms = if i % 25 == 0 { 2000 } else { 100 };
            h.record(Role::Generator, Duration::from_millis(ms));
        }
        let d = h.delay(Role::Generator).unwrap();
        assert!(
            d >= Duration::from_millis(100) && d <= Duration::from_millis(120),
            "{d:?}"
        );
        assert_eq!(h.delay(Role::Verifier), None, "each role keeps its own");
        // Fast calls: never sooner than the floor.
        let h = Hedging::default();
        for _ in 0..200 {
            h.record(Role::Verifier, Duration::from_micros(300));
        }
        assert_eq!(h.delay(Role::Verifier), Some(MIN_HEDGE_DELAY));
        assert_eq!(Hedging::new(false).delay(Role::Verifier), None);
    }

    type Outcome = Result<&'static str, &'static str>;
    /// The first call's time and outcome, the hedge delay, the copy's time and outcome
    /// (None: no copy to be had), the outcomes in the order they finish, and whether a
    /// copy was sent.
    type Case = (
        u64,
        Outcome,
        Option<Duration>,
        Option<(u64, Outcome)>,
        Vec<Outcome>,
        bool,
    );

    async fn after(ms: u64, outcome: Outcome) -> Outcome {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        outcome
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_call_is_answered_by_its_copy_and_a_fast_one_is_not_copied() {
        let d = Some(Duration::from_millis(100));
        let cases: [Case; 6] = [
            // Stuck: the copy answers.
            (
                10_000,
                Ok("first"),
                d,
                Some((50, Ok("copy"))),
                vec![Ok("copy")],
                true,
            ),
            // Answers before the delay: no copy.
            (
                20,
                Ok("first"),
                d,
                Some((1, Ok("copy"))),
                vec![Ok("first")],
                false,
            ),
            // No member or no budget for a copy: the first call is awaited.
            (300, Ok("first"), d, None, vec![Ok("first")], false),
            // The copy fails: the first call still answers.
            (
                300,
                Ok("first"),
                d,
                Some((10, Err("copy failed"))),
                vec![Err("copy failed"), Ok("first")],
                true,
            ),
            // Both fail: both outcomes, in the order they came.
            (
                150,
                Err("first failed"),
                d,
                Some((200, Err("copy failed"))),
                vec![Err("first failed"), Err("copy failed")],
                true,
            ),
            // Hedging off.
            (
                10_000,
                Ok("first"),
                None,
                Some((1, Ok("copy"))),
                vec![Ok("first")],
                false,
            ),
        ];
        for (i, (ms, first, delay, copy, outcomes, hedged)) in cases.into_iter().enumerate() {
            let r = race(
                after(ms, first),
                delay,
                || copy.map(|(ms, o)| after(ms, o)),
                |o: &Outcome| o.is_ok(),
            )
            .await;
            assert_eq!((r.outcomes, r.hedged), (outcomes, hedged), "case {i}");
        }
    }

    #[test]
    fn the_delay_follows_the_calls_when_they_slow_down() {
        let h = Hedging::default();
        for _ in 0..2048 {
            h.record(Role::Generator, Duration::from_millis(50));
        }
        assert!(h.delay(Role::Generator).unwrap() < Duration::from_millis(60));
        for _ in 0..4096 {
            h.record(Role::Generator, Duration::from_millis(400));
        }
        let d = h.delay(Role::Generator).unwrap();
        assert!(d >= Duration::from_millis(400), "{d:?}");
    }
}
