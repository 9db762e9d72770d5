//! Per-client rate limits: one token bucket per client, keyed by API key name (or by
//! peer IP address when the API is open).
//!
//! Why governor: its keyed limiter is a GCRA token bucket over a `DashMap`, lock-free
//! per check, and `retain_recent` forgets idle clients, so memory stays bounded by the
//! clients active in the last few seconds, not by every address ever seen.

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// How often idle clients' buckets are dropped.
const FORGET_EVERY: Duration = Duration::from_secs(30);

pub struct ClientLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    rate: f64,
    burst: u32,
    /// What a token stands for, for messages ("requests", "generations").
    unit: &'static str,
}

impl ClientLimiter {
    /// `rate` `unit`s per second per client (0: no limit), bursts of `burst` (default:
    /// the rate rounded up, at least 1).
    pub fn new(
        rate: f64,
        burst: Option<u32>,
        unit: &'static str,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        anyhow::ensure!(
            rate.is_finite() && rate >= 0.0,
            "the rate limit must be a number of {unit} per second, 0 for no limit"
        );
        if rate == 0.0 {
            anyhow::ensure!(burst.is_none(), "a burst needs a rate limit");
            return Ok(None);
        }
        anyhow::ensure!(
            rate <= 1e6,
            "the rate limit must be at most 1000000 {unit} per second"
        );
        let burst = burst.unwrap_or(rate.ceil() as u32).max(1);
        let burst_nz = NonZeroU32::new(burst)
            .ok_or_else(|| anyhow::anyhow!("the burst must be at least 1"))?;
        let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rate))
            .ok_or_else(|| anyhow::anyhow!("--rate-limit {rate} is too high"))?
            .allow_burst(burst_nz);
        let me = Arc::new(Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            rate,
            burst,
            unit,
        });
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FORGET_EVERY).await;
                let Some(me) = weak.upgrade() else { return };
                me.limiter.retain_recent();
            }
        });
        Ok(Some(me))
    }

    /// Takes `n` tokens from `client`'s bucket, or RESOURCE_EXHAUSTED naming the limit
    /// and when to retry. `who` describes the client for the message.
    pub fn check(&self, client: &str, who: &str, n: u32) -> Result<(), Status> {
        let unit = self.unit;
        let (rate, burst) = (self.rate, self.burst);
        let Some(n_nz) = NonZeroU32::new(n) else {
            return Ok(());
        };
        match self.limiter.check_key_n(&client.to_string(), n_nz) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Err(ponder_cluster::status::resource_exhausted(
                    format!(
                        "rate limit exceeded for {who}: at most {rate} {unit} per second with \
                         bursts of {burst}; retry in {:.2} s",
                        wait.as_secs_f64()
                    ),
                    wait,
                ))
            }
            Err(_) => Err(ponder_cluster::status::invalid_argument(format!(
                "budget.max_generations: {who} asked for {n} {unit} at once; the burst limit is \
                 {burst} {unit}"
            ))),
        }
    }

    /// Clients with a bucket that is not full (for tests and metrics).
    pub fn tracked_clients(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_passes_then_the_limit_answers_resource_exhausted() {
        let l = ClientLimiter::new(1.0, Some(3), "requests")
            .unwrap()
            .unwrap();
        for _ in 0..3 {
            l.check("a", "client a", 1).unwrap();
        }
        let e = l.check("a", "client a", 1).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message()
                .contains("at most 1 requests per second with bursts of 3"),
            "{}",
            e.message()
        );
        // Another client has its own bucket.
        l.check("b", "client b", 1).unwrap();
        assert!(ClientLimiter::new(0.0, None, "requests").unwrap().is_none());
        assert!(ClientLimiter::new(-1.0, None, "requests").is_err());
    }

    #[tokio::test]
    async fn generation_buckets_charge_a_budget_and_refuse_one_above_the_burst() {
        let l = ClientLimiter::new(10.0, Some(64), "generations")
            .unwrap()
            .unwrap();
        l.check("k", "API key k", 48).unwrap();
        let e = l.check("k", "API key k", 32).unwrap_err();
        assert!(
            e.message().contains("at most 10 generations per second"),
            "{}",
            e.message()
        );
        let e = l.check("j", "API key j", 65).unwrap_err();
        assert!(
            e.message().contains("the burst limit is 64 generations"),
            "{}",
            e.message()
        );
        // No retry can succeed: the request must ask for less.
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        l.check("j", "API key j", 64).unwrap();
    }
}
