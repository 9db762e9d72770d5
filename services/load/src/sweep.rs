//! Rate sweep: open-loop steps at rising rates until the SLO breaks; the knee is the
//! highest rate that met it (the most load the cluster sustains within the SLO).
//!
//! Each step is a full open-loop run (warm-up, measured phase, grace), so a step starts
//! from a cluster that has drained the previous one. Step `i` draws its arrivals and its
//! questions with seed `seed + i`: steps ask different questions, so prefix caches warmed
//! by one step do not flatter the next. Under `--cycle` every step asks the same cycled
//! requests (the recorded backend holds only those; docs/scaling.md), and only the
//! arrivals change.
//!
//! A step breaks the SLO when the latency at the SLO percentile exceeds it or when more
//! than `max_failed_share` of its requests fail (a server that sheds load with
//! RESOURCE_EXHAUSTED has fast errors, not good latency). Short steps near the knee
//! overestimate it a little: a queue that grows slowly has not grown far yet.

use crate::driver::{Loop, Plan};
use crate::progress::Progress;
use crate::record::Record;
use crate::report::{Report, RunInfo};
use crate::target::Target;
use crate::workload::Workload;
use serde::{Deserialize, Serialize};

/// Most steps a sweep may have.
pub const MAX_STEPS: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub rate: f64,
    pub met: bool,
    /// Why the SLO broke.
    pub reason: Option<String>,
    pub report: Report,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub slo_s: f64,
    pub slo_percentile: f64,
    pub max_failed_share: f64,
    pub steps: Vec<Step>,
    /// The highest rate that met the SLO, in requests per second.
    pub knee_rate: Option<f64>,
}

impl SweepReport {
    pub fn knee(&self) -> Option<&Step> {
        self.steps.iter().rev().find(|s| s.met)
    }

    /// Generations per second the cluster served at the knee: its throughput times the
    /// mean generations per answer. Divided by the generator nodes, it is the
    /// orchestrator's `--capacity` (docs/load-adaptive.md, "The capacity law").
    pub fn knee_generations_per_s(&self) -> Option<f64> {
        let k = &self.knee()?.report;
        Some(k.throughput * k.mean_generations?)
    }

    pub fn save(&self, path: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }
}

pub struct Sweep {
    /// Rising rates, requests per second.
    pub rates: Vec<f64>,
    /// The plan of every step; its rate is replaced by the step's.
    pub plan: Plan,
    pub max_failed_share: f64,
    /// Show the live progress line.
    pub progress: bool,
}

/// `--from 0.5 --to 4 --step 0.5`: the rates of a linear sweep, both ends included.
pub fn linear_rates(from: f64, to: f64, step: f64) -> anyhow::Result<Vec<f64>> {
    anyhow::ensure!(
        from > 0.0 && step > 0.0 && to >= from && from.is_finite() && to.is_finite(),
        "--from, --to and --step must be positive with --to >= --from"
    );
    let n = ((to - from) / step + 1e-9).floor() as usize + 1;
    anyhow::ensure!(
        n <= MAX_STEPS,
        "{n} steps; a sweep has at most {MAX_STEPS} (raise --step)"
    );
    Ok((0..n).map(|i| from + step * i as f64).collect())
}

/// Runs the sweep; `records` receives every step's records, tagged with the step.
pub async fn run(
    sweep: &Sweep,
    target: &Target,
    workload: &Workload,
    info: &RunInfo,
    records: &mut Vec<Record>,
) -> anyhow::Result<SweepReport> {
    let slo_s = info
        .slo_s
        .ok_or_else(|| anyhow::anyhow!("a sweep needs --slo (e.g. --slo 10s)"))?;
    anyhow::ensure!(
        !sweep.rates.is_empty() && sweep.rates.len() <= MAX_STEPS,
        "a sweep needs 1..={MAX_STEPS} rates"
    );
    anyhow::ensure!(
        sweep.rates.windows(2).all(|w| w[0] < w[1]),
        "sweep rates must rise: {:?}",
        sweep.rates
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&sweep.max_failed_share),
        "--max-error-rate must be in [0, 1]"
    );
    let mut steps = Vec::new();
    for (i, &rate) in sweep.rates.iter().enumerate() {
        let mut plan = sweep.plan.clone();
        let Loop::Open {
            arrivals,
            max_concurrency,
            ..
        } = plan.mode
        else {
            anyhow::bail!("a sweep runs open-loop steps");
        };
        plan.mode = Loop::Open {
            rate,
            arrivals,
            max_concurrency,
        };
        plan.seed = sweep.plan.seed.wrapping_add(i as u64);
        let mut w = workload.clone();
        if w.cycle.is_none() {
            w.seed = workload.seed.wrapping_add(i as u64);
        }
        let expected = plan
            .duration
            .map(|d| (rate * d.as_secs_f64()).round() as u64)
            .or(plan.requests);
        let progress = Progress::start(&format!("{rate} req/s"), expected, sweep.progress);
        let step_records = crate::driver::run(&plan, target, &w, progress.counters.clone()).await;
        progress.finish();
        let mut step_records = step_records?;
        let mut step_info = info.clone();
        step_info.mode = plan.mode;
        let report = Report::build(step_info, &step_records);
        let verdict = report.meets_slo(sweep.max_failed_share);
        println!("{}", step_line(rate, &report, &verdict));
        for r in &mut step_records {
            r.step = Some(i as u32);
        }
        records.append(&mut step_records);
        let met = verdict.is_ok();
        steps.push(Step {
            rate,
            met,
            reason: verdict.err(),
            report,
        });
        if !met {
            break;
        }
    }
    let mut out = SweepReport {
        slo_s,
        slo_percentile: info.slo_percentile,
        max_failed_share: sweep.max_failed_share,
        steps,
        knee_rate: None,
    };
    out.knee_rate = out.knee().map(|s| s.rate);
    Ok(out)
}

fn step_line(rate: f64, r: &Report, verdict: &Result<(), String>) -> String {
    format!(
        "rate {rate:>7.3}/s: throughput {:.3}/s, p{} {} s, ok {}/{}, accuracy {}, goodput {}: {}",
        r.throughput,
        r.info.slo_percentile,
        r.slo_latency_s.map_or("-".into(), |l| format!("{l:.2}")),
        r.ok,
        r.scheduled,
        r.accuracy.map_or("-".into(), |a| format!("{a:.3}")),
        r.goodput.map_or("-".into(), |g| format!("{g:.3}/s")),
        match verdict {
            Ok(()) => "SLO met".to_string(),
            Err(why) => format!("SLO broken ({why})"),
        }
    )
}

/// The closing summary of a sweep.
pub fn summary(s: &SweepReport) -> String {
    let held = s.steps.last().is_some_and(|l| l.met);
    match s.knee() {
        Some(k) => format!(
            "knee: {}{:.3} queries/s (the highest rate with p{} <= {} s and at most {:.1}% failed{}); at the knee: throughput {:.3}/s, p{} {:.2} s, accuracy {}, goodput {}",
            if held { ">= " } else { "" },
            k.rate,
            s.slo_percentile,
            s.slo_s,
            100.0 * s.max_failed_share,
            if held { "; the SLO held at every rate tried: raise --to" } else { "" },
            k.report.throughput,
            s.slo_percentile,
            k.report.slo_latency_s.unwrap_or(f64::NAN),
            k.report.accuracy.map_or("-".into(), |a| format!("{a:.3}")),
            k.report.goodput.map_or("-".into(), |g| format!("{g:.3}/s")),
        ) + &s.knee_generations_per_s().map_or(String::new(), |g| {
            format!(
                ", {g:.1} generations/s (--capacity: this over the generator nodes, from a sweep at a fixed budget)"
            )
        }),
        None => format!(
            "no knee: the lowest rate, {} req/s, already broke the SLO",
            s.steps.first().map_or(f64::NAN, |s| s.rate)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_rates_include_both_ends() {
        assert_eq!(
            linear_rates(0.5, 2.0, 0.5).unwrap(),
            vec![0.5, 1.0, 1.5, 2.0]
        );
        assert_eq!(linear_rates(1.0, 1.0, 1.0).unwrap(), vec![1.0]);
        assert!(linear_rates(1.0, 1000.0, 1.0).is_err());
        assert!(linear_rates(2.0, 1.0, 1.0).is_err());
    }

    #[test]
    fn the_knee_reports_the_generations_it_served() {
        use crate::report::tests::{info, record};
        let step = |rate: f64, met: bool| Step {
            rate,
            met,
            reason: None,
            report: Report::build(
                info(Some(2.0)),
                &[
                    record(1, 1.0, Some(1.0), "OK", Some(true)),
                    record(2, 2.0, Some(3.0), "OK", Some(true)),
                ],
            ),
        };
        let mut s = SweepReport {
            slo_s: 2.0,
            slo_percentile: 99.0,
            max_failed_share: 0.01,
            steps: vec![step(1.0, true), step(2.0, false)],
            knee_rate: Some(1.0),
        };
        // Two answers of 4 generations each over a 4 s window.
        assert_eq!(s.knee_generations_per_s(), Some(2.0));
        assert!(summary(&s).contains(", 2.0 generations/s (--capacity"));
        s.steps[0].met = false;
        assert_eq!(s.knee_generations_per_s(), None, "no knee");
    }
}
