//! `ponder-load compare a.json b.json`: the differences between two saved reports, one
//! row per figure, with the relative change and whether it is better or worse. Sweep
//! reports are compared by their knees (the rate, then the report at the knee).

use crate::report::{Quantiles, Report};
use crate::sweep::SweepReport;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

/// Which way is better for a figure.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
    Neither,
}

/// A report file: a single run or a sweep.
pub enum Saved {
    Run(Box<Report>),
    Sweep(Box<SweepReport>),
}

pub fn load(path: &Path) -> anyhow::Result<Saved> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))?;
    let not_a_report = |e: serde_json::Error| {
        anyhow::anyhow!(
            "{} is not a ponder-load report (--json of run or sweep): {e}",
            path.display()
        )
    };
    Ok(if value.get("steps").is_some() {
        Saved::Sweep(Box::new(
            serde_json::from_value(value).map_err(not_a_report)?,
        ))
    } else {
        Saved::Run(Box::new(
            serde_json::from_value(value).map_err(not_a_report)?,
        ))
    })
}

pub fn compare_files(a: &Path, b: &Path) -> anyhow::Result<()> {
    print!("{}", compare(&load(a)?, &load(b)?)?);
    Ok(())
}

pub fn compare(a: &Saved, b: &Saved) -> anyhow::Result<String> {
    match (a, b) {
        (Saved::Run(a), Saved::Run(b)) => Ok(runs(a, b)),
        (Saved::Sweep(a), Saved::Sweep(b)) => {
            let mut s = String::new();
            header(&mut s);
            row(
                &mut s,
                "knee (queries/s)",
                a.knee_rate,
                b.knee_rate,
                Better::Higher,
            );
            match (a.knee(), b.knee()) {
                (Some(ka), Some(kb)) => {
                    let _ = writeln!(s, "\nat the knee:");
                    s.push_str(&runs(&ka.report, &kb.report));
                }
                _ => {
                    let _ = writeln!(s, "(one of the sweeps has no knee)");
                }
            }
            Ok(s)
        }
        _ => anyhow::bail!("compare two run reports or two sweep reports, not one of each"),
    }
}

fn header(s: &mut String) {
    let _ = writeln!(
        s,
        "{:<26} {:>12} {:>12} {:>10}",
        "figure", "a", "b", "change"
    );
}

fn row(s: &mut String, name: &str, a: Option<f64>, b: Option<f64>, better: Better) {
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let (change, verdict) = match (a, b) {
        (Some(a), Some(b)) if a != b => {
            let rel = if a != 0.0 {
                format!("{:+.1}%", 100.0 * (b - a) / a.abs())
            } else {
                format!("{:+.4}", b - a)
            };
            let verdict = match better {
                Better::Higher if b > a => "better",
                Better::Lower if b < a => "better",
                Better::Neither => "",
                _ => "worse",
            };
            (rel, verdict)
        }
        (Some(_), Some(_)) => ("=".into(), ""),
        _ => ("".into(), ""),
    };
    let _ = writeln!(
        s,
        "{name:<26} {:>12} {:>12} {change:>10}  {verdict}",
        show(a),
        show(b)
    );
}

/// One figure of a latency distribution.
type Figure = fn(&Quantiles) -> f64;

const QUANTILE_ROWS: [(&str, Figure); 7] = [
    ("mean", |q| q.mean),
    ("p50", |q| q.p50),
    ("p90", |q| q.p90),
    ("p95", |q| q.p95),
    ("p99", |q| q.p99),
    ("p99.9", |q| q.p999),
    ("max", |q| q.max),
];

fn quantile_rows(s: &mut String, name: &str, a: &Option<Quantiles>, b: &Option<Quantiles>) {
    for (label, f) in QUANTILE_ROWS {
        let (fa, fb) = (a.as_ref().map(f), b.as_ref().map(f));
        row(s, &format!("{name} {label} (s)"), fa, fb, Better::Lower);
    }
}

fn runs(a: &Report, b: &Report) -> String {
    let mut s = String::new();
    if a.info != b.info {
        let _ = writeln!(
            s,
            "note: the runs differ in setup:\n  a: {} -> {}; {}; mix {}\n  b: {} -> {}; {}; mix {}",
            a.info.mode.label(),
            a.info.target,
            a.info.workload,
            a.info.mix,
            b.info.mode.label(),
            b.info.target,
            b.info.workload,
            b.info.mix
        );
    }
    header(&mut s);
    let n = |v: u64| Some(v as f64);
    use Better::*;
    row(&mut s, "scheduled", n(a.scheduled), n(b.scheduled), Neither);
    row(&mut s, "sent", n(a.sent), n(b.sent), Neither);
    row(&mut s, "ok", n(a.ok), n(b.ok), Higher);
    row(&mut s, "partial", n(a.partial), n(b.partial), Lower);
    row(
        &mut s,
        "failed",
        n(a.scheduled - a.ok),
        n(b.scheduled - b.ok),
        Lower,
    );
    let codes: BTreeSet<&String> = a.errors.keys().chain(b.errors.keys()).collect();
    for code in codes {
        let get = |r: &Report| Some(r.errors.get(code).copied().unwrap_or(0) as f64);
        row(&mut s, &format!("  {code}"), get(a), get(b), Lower);
    }
    row(&mut s, "send rate (/s)", a.send_rate, b.send_rate, Neither);
    row(
        &mut s,
        "throughput (/s)",
        Some(a.throughput),
        Some(b.throughput),
        Higher,
    );
    row(&mut s, "goodput (/s)", a.goodput, b.goodput, Higher);
    row(&mut s, "accuracy", a.accuracy, b.accuracy, Higher);
    quantile_rows(&mut s, "latency", &a.latency, &b.latency);
    quantile_rows(&mut s, "service", &a.service_time, &b.service_time);
    if a.first_event.is_some() || b.first_event.is_some() {
        quantile_rows(&mut s, "first event", &a.first_event, &b.first_event);
    }
    row(
        &mut s,
        "generations / query",
        a.mean_generations,
        b.mean_generations,
        Lower,
    );
    row(
        &mut s,
        "tokens / query",
        a.mean_tokens,
        b.mean_tokens,
        Lower,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{info, record};

    #[test]
    fn shows_each_change_and_which_way_is_better() {
        let fast: Vec<_> = (1..=10)
            .map(|i| record(i, i as f64, Some(0.2), "OK", Some(true)))
            .collect();
        let mut slow = fast.clone();
        for r in &mut slow[..5] {
            r.latency_s = Some(4.0);
        }
        slow[9].code = "RESOURCE_EXHAUSTED".into();
        let a = Saved::Run(Box::new(Report::build(info(Some(1.0)), &fast)));
        let b = Saved::Run(Box::new(Report::build(info(Some(1.0)), &slow)));
        let text = compare(&a, &b).unwrap();
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} row in\n{text}"))
                .to_string()
        };
        assert!(line("latency p99 (s)").ends_with("worse"), "{text}");
        assert!(line("  RESOURCE_EXHAUSTED").contains("1.0000"), "{text}");
        assert!(line("goodput (/s)").ends_with("worse"), "{text}");
        assert!(line("scheduled").contains(" = "), "{text}");
        let sweep = Saved::Sweep(Box::new(SweepReport {
            slo_s: 1.0,
            slo_percentile: 99.0,
            max_failed_share: 0.01,
            steps: vec![],
            knee_rate: None,
        }));
        assert!(compare(&a, &sweep).is_err());
    }
}
