//! Runs a plan against the target and returns one record per request.
//!
//! **Open loop** (the default, and the only honest way to measure latency at a given
//! load): requests are sent at the schedule's absolute offsets whatever the answers do.
//! Each request is its own task; the scheduler never waits for an answer, so a stalled
//! server cannot slow the sending down. With `max_concurrency`, a request that finds
//! every slot taken waits for one *after* its intended time, and that wait is part of
//! its latency: latency is always `done - intended`, which is what a user arriving at
//! that moment would have waited (no coordinated omission, as in wrk2).
//!
//! **Closed loop**: `concurrency` workers, each sending its next request when the last
//! one is answered. Its latency is service time by construction (the load adapts to the
//! server), which is what closed-loop numbers mean; use it for capacity, not for SLOs.
//!
//! Both are bounded twice: a measured-request count and a time (`duration`, or
//! `max_time` when only a count is given). After the last send, answers get `grace` to
//! arrive; the rest are cancelled (their HTTP/2 streams reset) and recorded as
//! `UNFINISHED`. Requests sent before `warmup` are recorded but marked as warm-up.

use crate::arrivals::{Arrivals, Schedule};
use crate::progress::Counters;
use crate::record::{Record, UNFINISHED};
use crate::target::{code_name, Outcome, Target};
use crate::workload::{is_correct, Job, Workload};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The count bound when only a duration is given.
pub const MAX_REQUESTS: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loop {
    Open {
        /// Requests per second.
        rate: f64,
        arrivals: Arrivals,
        /// Most requests in flight; the others wait for a slot (and it counts).
        max_concurrency: Option<usize>,
    },
    Closed {
        concurrency: usize,
    },
}

impl Loop {
    pub fn label(&self) -> String {
        match self {
            Loop::Open {
                rate,
                arrivals,
                max_concurrency,
            } => {
                let cap =
                    max_concurrency.map_or(String::new(), |c| format!(", at most {c} in flight"));
                format!(
                    "open loop, {} arrivals at {rate} req/s{cap}",
                    arrivals.label()
                )
            }
            Loop::Closed { concurrency } => format!("closed loop, {concurrency} concurrent"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub mode: Loop,
    /// Length of the measured phase (after the warm-up).
    pub duration: Option<Duration>,
    /// Measured requests to send (warm-up requests not counted).
    pub requests: Option<u64>,
    pub warmup: Duration,
    /// How long answers may still arrive after the last send.
    pub grace: Duration,
    /// The time bound of the measured phase when only `requests` is given.
    pub max_time: Duration,
    /// Seed of the arrival schedule.
    pub seed: u64,
}

impl Plan {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.duration.is_some() || self.requests.is_some(),
            "give --duration or --requests (or both): every run is bounded"
        );
        anyhow::ensure!(
            self.duration.is_none_or(|d| !d.is_zero()),
            "--duration must be positive"
        );
        anyhow::ensure!(
            self.requests
                .is_none_or(|n| (1..=MAX_REQUESTS).contains(&n)),
            "--requests must be 1..={MAX_REQUESTS}"
        );
        anyhow::ensure!(!self.max_time.is_zero(), "--max-time must be positive");
        match self.mode {
            Loop::Open {
                rate,
                max_concurrency,
                ..
            } => {
                anyhow::ensure!(
                    rate.is_finite() && rate > 0.0 && rate <= 100_000.0,
                    "--rate must be in (0, 100000] requests per second, got {rate}"
                );
                anyhow::ensure!(
                    max_concurrency.is_none_or(|c| c >= 1),
                    "--max-concurrency must be at least 1"
                );
            }
            Loop::Closed { concurrency } => anyhow::ensure!(
                (1..=10_000).contains(&concurrency),
                "--concurrency must be 1..=10000"
            ),
        }
        Ok(())
    }

    /// The offset after which nothing more is sent.
    pub fn schedule_end(&self) -> Duration {
        self.warmup + self.duration.unwrap_or(self.max_time)
    }

    fn count_bound(&self) -> u64 {
        self.requests.unwrap_or(MAX_REQUESTS)
    }
}

/// What every request task shares.
struct Shared {
    target: Target,
    t0: Instant,
    cancel: CancellationToken,
    limiter: Option<Arc<Semaphore>>,
    counters: Arc<Counters>,
    labels: Vec<String>,
}

/// Runs `plan` and returns the records, in request order.
pub async fn run(
    plan: &Plan,
    target: &Target,
    workload: &Workload,
    counters: Arc<Counters>,
) -> anyhow::Result<Vec<Record>> {
    plan.validate()?;
    let limiter = match plan.mode {
        Loop::Open {
            max_concurrency: Some(c),
            ..
        } => Some(Arc::new(Semaphore::new(c))),
        _ => None,
    };
    let shared = Arc::new(Shared {
        target: target.clone(),
        t0: Instant::now(),
        cancel: CancellationToken::new(),
        limiter,
        counters,
        labels: workload.mix.entries().iter().map(|e| e.label()).collect(),
    });
    let mut records = match plan.mode {
        Loop::Open { rate, arrivals, .. } => {
            open_loop(
                plan,
                Schedule::new(rate, arrivals, plan.seed)?,
                &shared,
                workload,
            )
            .await?
        }
        Loop::Closed { concurrency } => {
            closed_loop(plan, concurrency, &shared, Arc::new(workload.clone())).await?
        }
    };
    records.sort_by_key(|r| r.index);
    Ok(records)
}

async fn open_loop(
    plan: &Plan,
    schedule: Schedule,
    shared: &Arc<Shared>,
    workload: &Workload,
) -> anyhow::Result<Vec<Record>> {
    let (end, bound) = (plan.schedule_end(), plan.count_bound());
    let mut tasks = JoinSet::new();
    let mut records = Vec::new();
    let mut measured = 0;
    for (index, offset) in (0u64..).zip(schedule) {
        if offset >= end {
            break;
        }
        let warmup = offset < plan.warmup;
        if !warmup {
            if measured == bound {
                break;
            }
            measured += 1;
        }
        let job = workload.job(index);
        let intended = shared.t0 + offset;
        tokio::time::sleep_until(intended).await;
        tasks.spawn(send(shared.clone(), job, intended, warmup));
        while let Some(r) = tasks.try_join_next() {
            records.push(r?);
        }
    }
    let grace_end = Instant::now() + plan.grace;
    finish(&mut tasks, grace_end, &shared.cancel, &mut records).await?;
    Ok(records)
}

async fn closed_loop(
    plan: &Plan,
    concurrency: usize,
    shared: &Arc<Shared>,
    workload: Arc<Workload>,
) -> anyhow::Result<Vec<Record>> {
    let stop_at = shared.t0 + plan.schedule_end();
    let (bound, warmup) = (plan.count_bound(), plan.warmup);
    let next_index = Arc::new(AtomicU64::new(0));
    let measured = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (shared, workload) = (shared.clone(), workload.clone());
        let (next_index, measured) = (next_index.clone(), measured.clone());
        workers.spawn(async move {
            let mut out = Vec::new();
            loop {
                let now = Instant::now();
                if now >= stop_at || shared.cancel.is_cancelled() {
                    break;
                }
                let in_warmup = now - shared.t0 < warmup;
                if !in_warmup && measured.fetch_add(1, Relaxed) >= bound {
                    break;
                }
                let job = workload.job(next_index.fetch_add(1, Relaxed));
                let r = send(shared.clone(), job, Instant::now(), in_warmup).await;
                let cancelled = r.code == UNFINISHED;
                out.push(r);
                if cancelled {
                    break;
                }
            }
            out
        });
    }
    let mut batches = Vec::new();
    finish(
        &mut workers,
        stop_at + plan.grace,
        &shared.cancel,
        &mut batches,
    )
    .await?;
    Ok(batches.into_iter().flatten().collect())
}

/// Collects what finishes before `grace_end`, then cancels the rest and collects that.
async fn finish<T: 'static>(
    tasks: &mut JoinSet<T>,
    grace_end: Instant,
    cancel: &CancellationToken,
    out: &mut Vec<T>,
) -> anyhow::Result<()> {
    let collected = tokio::time::timeout_at(grace_end, async {
        while let Some(r) = tasks.join_next().await {
            out.push(r?);
        }
        Ok::<(), tokio::task::JoinError>(())
    })
    .await;
    if let Ok(r) = collected {
        r?;
    }
    cancel.cancel();
    while let Some(r) = tasks.join_next().await {
        out.push(r?);
    }
    Ok(())
}

/// One request: waits for a slot if capped, sends, waits for the answer or the
/// cancellation, and records it.
async fn send(shared: Arc<Shared>, job: Job, intended: Instant, warmup: bool) -> Record {
    let mut sent = None;
    let answered: Option<(Outcome, Instant)> = {
        let body = async {
            let _slot = match &shared.limiter {
                Some(s) => Some(s.clone().acquire_owned().await.expect("never closed")),
                None => None,
            };
            sent = Some(Instant::now());
            shared.counters.sent.fetch_add(1, Relaxed);
            let outcome = shared.target.call(job.index, job.request.clone()).await;
            (outcome, Instant::now())
        };
        tokio::select! {
            biased;
            r = body => Some(r),
            _ = shared.cancel.cancelled() => None,
        }
    };
    let at = |t: Instant| (t - shared.t0).as_secs_f64();
    let mut r = Record {
        index: job.index,
        step: None,
        warmup,
        class: shared.labels[job.class].clone(),
        question: job.request.question,
        expected: job.expected,
        intended_s: at(intended),
        sent_s: sent.map(at),
        first_event_s: None,
        done_s: None,
        latency_s: None,
        service_s: None,
        first_event_latency_s: None,
        code: UNFINISHED.into(),
        message: String::new(),
        answer: None,
        correct: None,
        partial: None,
        strategy: None,
        generations: None,
        generator_tokens: None,
        verifier_tokens: None,
        budget_granted: None,
        budget_reason: None,
        budget_mode: None,
    };
    let Some((outcome, done)) = answered else {
        shared.counters.failed.fetch_add(1, Relaxed);
        r.message = if sent.is_some() {
            "not answered within the grace period".into()
        } else {
            "still waiting for a concurrency slot when the run ended".into()
        };
        return r;
    };
    r.done_s = Some(at(done));
    r.latency_s = Some((done - intended).as_secs_f64());
    r.service_s = sent.map(|s| (done - s).as_secs_f64());
    if let Some(first) = outcome.first_event {
        r.first_event_s = Some(at(first));
        r.first_event_latency_s = Some((first - intended).as_secs_f64());
    }
    match outcome.result {
        Ok(resp) => {
            shared.counters.ok.fetch_add(1, Relaxed);
            r.code = "OK".into();
            r.correct = r.expected.as_deref().map(|e| is_correct(&resp.answer, e));
            r.answer = Some(resp.answer);
            r.partial = Some(resp.partial);
            r.strategy = Some(resp.strategy);
            if resp.budget_granted > 0 {
                r.budget_granted = Some(resp.budget_granted);
                r.budget_reason = Some(resp.budget_reason);
                r.budget_mode = Some(
                    ponder_cluster::wire::budget_mode_from_pb(resp.budget_mode)
                        .map_or("unknown", |m| m.name())
                        .into(),
                );
            }
            if let Some(u) = resp.usage {
                r.generations = Some(u.generations);
                r.generator_tokens = Some(u.generator_tokens);
                r.verifier_tokens = Some(u.verifier_tokens);
            }
        }
        Err(status) => {
            shared.counters.failed.fetch_add(1, Relaxed);
            r.code = code_name(status.code()).into();
            r.message = status.message().to_string();
        }
    }
    r
}
