//! The final report as a plain-text table for stdout (the JSON form is the report
//! struct itself).

use crate::report::{Quantiles, Report};
use std::fmt::Write;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let i = &r.info;
    let rpc = format!("{:?}", i.rpc);
    let _ = writeln!(s, "target      {} ({rpc})", i.target);
    let _ = writeln!(
        s,
        "load        {}; warm-up {} s excluded; window {:.1} s",
        i.mode.label(),
        i.warmup_s,
        r.window_s
    );
    let _ = writeln!(s, "workload    {}; mix {}", i.workload, i.mix);
    let _ = writeln!(
        s,
        "requests    scheduled {}, sent {}, completed {}, ok {} ({} partial: cut by the deadline)",
        r.scheduled, r.sent, r.completed, r.ok, r.partial
    );
    let errors = if r.errors.is_empty() {
        "none".to_string()
    } else {
        r.errors
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(s, "errors      {errors}");
    let _ = writeln!(
        s,
        "rate        target {}/s, sent {}/s, throughput {:.3}/s, goodput {}",
        opt(r.target_rate, 3),
        opt(r.send_rate, 3),
        r.throughput,
        match (r.goodput, i.slo_s) {
            (Some(g), _) => format!("{g:.3}/s"),
            (None, None) => "- (needs --slo)".into(),
            (None, Some(_)) => "- (no expected answers)".into(),
        }
    );
    let _ = writeln!(
        s,
        "accuracy    {}",
        match r.accuracy {
            Some(a) => format!(
                "{a:.3} ({}/{} OK answers with a known answer)",
                r.correct, r.known
            ),
            None => "- (no OK answer with a known answer)".into(),
        }
    );
    if let Some(slo) = i.slo_s {
        let verdict = match r.meets_slo(1.0) {
            Ok(()) => "met".to_string(),
            Err(why) => format!("broken: {why}"),
        };
        let _ = writeln!(
            s,
            "slo         p{} {} s vs {slo} s: {verdict}; {}/{} OK answers within it",
            i.slo_percentile,
            opt(r.slo_latency_s, 3),
            r.within_slo.unwrap_or(0),
            r.ok
        );
    }
    let _ = writeln!(
        s,
        "compute     {} generations, {} tokens per OK answer (mean)",
        opt(r.mean_generations, 1),
        opt(r.mean_tokens, 0)
    );
    let _ = writeln!(
        s,
        "\n{:<18} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "latency (s)", "count", "mean", "p50", "p90", "p95", "p99", "p99.9", "max"
    );
    let mut row = |name: &str, q: &Option<Quantiles>| {
        if let Some(q) = q {
            let _ = writeln!(
                s,
                "{name:<18} {:>7} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                q.count, q.mean, q.p50, q.p90, q.p95, q.p99, q.p999, q.max
            );
        }
    };
    row("from intended send", &r.latency);
    row("service time", &r.service_time);
    row("first event", &r.first_event);
    if r.latency.is_none() {
        let _ = writeln!(s, "(no OK answer)");
    }
    let _ = writeln!(
        s,
        "\n{:<24} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6} {:>8}",
        "class", "ok", "failed", "accuracy", "p50 (s)", "p99 (s)", "gens", "tokens"
    );
    for c in &r.classes {
        let _ = writeln!(
            s,
            "{:<24} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6} {:>8}",
            c.class,
            c.ok,
            c.failed,
            opt(c.accuracy, 3),
            opt(c.latency.map(|q| q.p50), 3),
            opt(c.latency.map(|q| q.p99), 3),
            opt(c.mean_generations, 1),
            opt(c.mean_tokens, 0)
        );
    }
    s
}
