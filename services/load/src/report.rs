//! The figures of a run, computed from its records alone (warm-up records excluded).
//!
//! Latency quantiles come from HDR histograms (microsecond resolution, 3 significant
//! digits); counts such as "within the SLO" come from the exact per-request latencies.
//!
//! Definitions, so two reports always mean the same thing:
//! - `window_s`: from the end of the warm-up to the last measured answer (or send).
//! - `throughput`: OK answers per second of the window; `goodput`: OK answers that are
//!   correct *and* within the SLO, per second of the window.
//! - `accuracy`: correct / OK answers whose expected answer is known (failures are
//!   counted in `errors`, not as wrong answers).
//! - mean generations and tokens: per OK answer.

use crate::driver::Loop;
use crate::record::Record;
use crate::target::Rpc;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// How the run was set up, carried into its report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub target: String,
    pub rpc: Rpc,
    pub mode: Loop,
    pub workload: String,
    pub mix: String,
    pub warmup_s: f64,
    pub duration_s: Option<f64>,
    pub requests: Option<u64>,
    /// The latency SLO in seconds, when given.
    pub slo_s: Option<f64>,
    /// The percentile the SLO applies to (99 = p99).
    pub slo_percentile: f64,
}

/// Latency figures in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The figures of one mix entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub class: String,
    pub ok: u64,
    pub failed: u64,
    pub accuracy: Option<f64>,
    pub latency: Option<Quantiles>,
    pub mean_generations: Option<f64>,
    pub mean_tokens: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub info: RunInfo,
    pub window_s: f64,
    /// Measured requests the schedule reached (sent or waiting for a slot).
    pub scheduled: u64,
    /// Handed to gRPC.
    pub sent: u64,
    /// Answered, OK or with an error code.
    pub completed: u64,
    pub ok: u64,
    /// OK answers the deadline cut short (`SolveResponse.partial`).
    #[serde(default)]
    pub partial: u64,
    /// Failures by gRPC code name (`UNFINISHED`: no answer within the grace period).
    pub errors: BTreeMap<String, u64>,
    /// The open loop's target rate.
    pub target_rate: Option<f64>,
    /// Achieved send rate: (sent - 1) / (last send - first send).
    pub send_rate: Option<f64>,
    pub throughput: f64,
    /// From the intended send time: what users wait.
    pub latency: Option<Quantiles>,
    /// From the actual send time: the server's part.
    pub service_time: Option<Quantiles>,
    /// SolveStream: from the intended send time to the first event.
    pub first_event: Option<Quantiles>,
    /// The latency at the SLO's percentile.
    pub slo_latency_s: Option<f64>,
    /// OK answers within the SLO.
    pub within_slo: Option<u64>,
    /// OK answers with a known expected answer.
    pub known: u64,
    pub correct: u64,
    pub accuracy: Option<f64>,
    /// OK, correct and within the SLO.
    pub good: Option<u64>,
    pub goodput: Option<f64>,
    pub mean_generations: Option<f64>,
    pub mean_tokens: Option<f64>,
    pub classes: Vec<ClassReport>,
}

impl Report {
    /// The report of `records` (warm-up records are skipped).
    pub fn build(info: RunInfo, records: &[Record]) -> Report {
        let measured: Vec<&Record> = records.iter().filter(|r| !r.warmup).collect();
        let ok: Vec<&Record> = measured.iter().copied().filter(|r| r.ok()).collect();
        let mut errors = BTreeMap::new();
        for r in measured.iter().filter(|r| !r.ok()) {
            *errors.entry(r.code.clone()).or_insert(0) += 1;
        }
        let end = measured
            .iter()
            .map(|r| r.done_s.or(r.sent_s).unwrap_or(r.intended_s))
            .fold(info.warmup_s, f64::max);
        let window_s = end - info.warmup_s;
        let per_s = |n: u64| {
            if window_s > 0.0 {
                n as f64 / window_s
            } else {
                0.0
            }
        };
        let mut sends: Vec<f64> = measured.iter().filter_map(|r| r.sent_s).collect();
        sends.sort_by(f64::total_cmp);
        let send_rate = match sends.as_slice() {
            [first, .., last] if last > first => Some((sends.len() - 1) as f64 / (last - first)),
            _ => None,
        };
        let latency_hist = histogram(ok.iter().filter_map(|r| r.latency_s));
        let slo_latency_s = latency_hist
            .as_ref()
            .map(|h| secs(h.value_at_quantile(info.slo_percentile / 100.0)));
        let within_slo = info.slo_s.map(|slo| {
            ok.iter()
                .filter(|r| r.latency_s.is_some_and(|l| l <= slo))
                .count() as u64
        });
        let known = ok.iter().filter(|r| r.correct.is_some()).count() as u64;
        let correct = ok.iter().filter(|r| r.correct == Some(true)).count() as u64;
        let good = info.slo_s.filter(|_| known > 0).map(|slo| {
            ok.iter()
                .filter(|r| r.correct == Some(true) && r.latency_s.is_some_and(|l| l <= slo))
                .count() as u64
        });
        Report {
            window_s,
            scheduled: measured.len() as u64,
            sent: measured.iter().filter(|r| r.sent_s.is_some()).count() as u64,
            completed: measured.iter().filter(|r| r.done_s.is_some()).count() as u64,
            ok: ok.len() as u64,
            partial: ok.iter().filter(|r| r.partial == Some(true)).count() as u64,
            errors,
            target_rate: match info.mode {
                Loop::Open { rate, .. } => Some(rate),
                Loop::Closed { .. } => None,
            },
            send_rate,
            throughput: per_s(ok.len() as u64),
            latency: latency_hist.as_ref().map(quantiles),
            service_time: histogram(ok.iter().filter_map(|r| r.service_s))
                .as_ref()
                .map(quantiles),
            first_event: histogram(ok.iter().filter_map(|r| r.first_event_latency_s))
                .as_ref()
                .map(quantiles),
            slo_latency_s,
            within_slo,
            known,
            correct,
            accuracy: (known > 0).then(|| correct as f64 / known as f64),
            good,
            goodput: good.map(per_s),
            mean_generations: mean(ok.iter().filter_map(|r| r.generations.map(f64::from))),
            mean_tokens: mean(ok.iter().filter_map(|r| r.tokens().map(|t| t as f64))),
            classes: classes(&measured),
            info,
        }
    }

    /// Whether the run met its SLO: the latency at the SLO percentile within the SLO,
    /// and at most `max_failed_share` of the scheduled requests failed. `Err` says why
    /// not.
    pub fn meets_slo(&self, max_failed_share: f64) -> Result<(), String> {
        let slo = self.info.slo_s.ok_or("no --slo was given")?;
        let failed = self.scheduled - self.ok;
        if self.scheduled == 0 || self.ok == 0 {
            return Err("no request was answered".into());
        }
        let share = failed as f64 / self.scheduled as f64;
        if share > max_failed_share {
            return Err(format!(
                "{failed}/{} requests failed ({:.1}% > {:.1}%)",
                self.scheduled,
                100.0 * share,
                100.0 * max_failed_share
            ));
        }
        let at = self.slo_latency_s.unwrap_or(f64::INFINITY);
        if at > slo {
            return Err(format!(
                "p{} latency {at:.2} s > SLO {slo} s",
                self.info.slo_percentile
            ));
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }
}

fn classes(measured: &[&Record]) -> Vec<ClassReport> {
    let mut by_class: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in measured {
        by_class.entry(&r.class).or_default().push(r);
    }
    by_class
        .into_iter()
        .map(|(class, rs)| {
            let ok: Vec<&Record> = rs.iter().copied().filter(|r| r.ok()).collect();
            let known = ok.iter().filter(|r| r.correct.is_some()).count();
            let correct = ok.iter().filter(|r| r.correct == Some(true)).count();
            ClassReport {
                class: class.to_string(),
                ok: ok.len() as u64,
                failed: (rs.len() - ok.len()) as u64,
                accuracy: (known > 0).then(|| correct as f64 / known as f64),
                latency: histogram(ok.iter().filter_map(|r| r.latency_s))
                    .as_ref()
                    .map(quantiles),
                mean_generations: mean(ok.iter().filter_map(|r| r.generations.map(f64::from))),
                mean_tokens: mean(ok.iter().filter_map(|r| r.tokens().map(|t| t as f64))),
            }
        })
        .collect()
}

/// A histogram of durations in seconds, recorded in microseconds; `None` when empty.
fn histogram(seconds: impl Iterator<Item = f64>) -> Option<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    for s in seconds {
        let micros = (s.max(0.0) * 1e6).round() as u64;
        h.record(micros.max(1))
            .expect("the histogram resizes itself");
    }
    (!h.is_empty()).then_some(h)
}

fn secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

fn quantiles(h: &Histogram<u64>) -> Quantiles {
    let q = |p: f64| secs(h.value_at_quantile(p));
    Quantiles {
        count: h.len(),
        mean: h.mean() / 1e6,
        p50: q(0.50),
        p90: q(0.90),
        p95: q(0.95),
        p99: q(0.99),
        p999: q(0.999),
        max: secs(h.max()),
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = values.fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::arrivals::Arrivals;
    use crate::target::Rpc;

    pub(crate) fn info(slo: Option<f64>) -> RunInfo {
        RunInfo {
            target: "127.0.0.1:1".into(),
            rpc: Rpc::Solve,
            mode: Loop::Open {
                rate: 10.0,
                arrivals: Arrivals::Constant,
                max_concurrency: None,
            },
            workload: "test".into(),
            mix: "default:4=1".into(),
            warmup_s: 1.0,
            duration_s: Some(10.0),
            requests: None,
            slo_s: slo,
            slo_percentile: 99.0,
        }
    }

    pub(crate) fn record(
        i: u64,
        intended: f64,
        latency: Option<f64>,
        code: &str,
        correct: Option<bool>,
    ) -> Record {
        Record {
            index: i,
            step: None,
            warmup: intended < 1.0,
            class: if i.is_multiple_of(2) { "a:4" } else { "b:4" }.into(),
            question: "1+1".into(),
            expected: correct.map(|_| "2".into()),
            intended_s: intended,
            sent_s: Some(intended),
            first_event_s: None,
            done_s: latency.map(|l| intended + l),
            latency_s: latency,
            service_s: latency,
            first_event_latency_s: None,
            code: code.into(),
            message: String::new(),
            answer: Some("2".into()),
            correct,
            partial: Some(false),
            strategy: Some("best_of_n".into()),
            generations: Some(4),
            generator_tokens: Some(100),
            verifier_tokens: Some(20),
            budget_granted: Some(4),
            budget_reason: Some("idle".into()),
            budget_mode: Some("adaptive".into()),
        }
    }

    #[test]
    fn figures_follow_their_definitions() {
        let rs = vec![
            record(0, 0.5, Some(9.0), "OK", Some(false)), // warm-up: ignored
            record(1, 1.0, Some(1.0), "OK", Some(true)),
            record(2, 2.0, Some(3.0), "OK", Some(true)), // correct but late
            record(3, 3.0, Some(0.5), "OK", Some(false)),
            record(4, 4.0, Some(0.1), "RESOURCE_EXHAUSTED", None),
            record(5, 5.0, None, "UNFINISHED", None),
            record(6, 1.5, Some(0.5), "OK", None), // answer not known
        ];
        let r = Report::build(info(Some(2.0)), &rs);
        assert_eq!((r.scheduled, r.sent, r.completed, r.ok), (6, 6, 5, 4));
        assert_eq!(r.errors.get("RESOURCE_EXHAUSTED"), Some(&1));
        assert_eq!(r.errors.get("UNFINISHED"), Some(&1));
        // The window ends at the last answer: 2.0 + 3.0 = 5.0 s, from 1.0 s.
        assert!((r.window_s - 4.0).abs() < 1e-9, "{}", r.window_s);
        assert!((r.throughput - 1.0).abs() < 1e-9);
        assert_eq!((r.known, r.correct), (3, 2));
        assert!((r.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.within_slo, Some(3));
        assert_eq!(r.good, Some(1));
        assert!((r.goodput.unwrap() - 0.25).abs() < 1e-9);
        let l = r.latency.unwrap();
        assert_eq!(l.count, 4);
        assert!(
            (l.max - 3.0).abs() < 0.01 && (l.p50 - 0.5).abs() < 0.01,
            "{l:?}"
        );
        assert_eq!(r.mean_generations, Some(4.0));
        assert_eq!(r.mean_tokens, Some(120.0));
        assert_eq!(r.classes.len(), 2);
        assert_eq!(r.classes.iter().map(|c| c.ok + c.failed).sum::<u64>(), 6);
        assert!(r.meets_slo(0.5).is_err(), "p99 is 3 s > 2 s");
    }

    #[test]
    fn failures_break_the_slo_even_when_answers_are_fast() {
        let rs: Vec<Record> = (1..=10)
            .map(|i| {
                let code = if i <= 2 { "UNAVAILABLE" } else { "OK" };
                record(i, i as f64, Some(0.1), code, Some(true))
            })
            .collect();
        let r = Report::build(info(Some(1.0)), &rs);
        assert!(r.meets_slo(0.25).is_ok());
        let why = r.meets_slo(0.1).unwrap_err();
        assert!(why.contains("2/10"), "{why}");
        assert!(Report::build(info(None), &rs).meets_slo(1.0).is_err());
    }
}
