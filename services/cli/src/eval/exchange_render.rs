//! The exchange-rate report's tables (Markdown, for docs/results.md) and plots
//! (PNG and SVG): the rendering of [`super::exchange::Report`], apart from how its
//! figures are computed.

use super::exchange::{Interval, Point, Report};
use super::plot::{log_chart, png_and_svg, register_font, LogAxis, Series};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn ci(c: &Interval) -> String {
    format!(
        "{:+.1} [{:+.1}, {:+.1}]",
        100.0 * c.0,
        100.0 * c.1,
        100.0 * c.2
    )
}

/// The report's tables in Markdown.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Models ({} questions):\n", r.questions);
    let _ = writeln!(
        s,
        "| model | parameters | training FLOPs | training tokens | greedy | greedy FLOPs/query |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for (m, g) in r.models.iter().zip(&r.greedy) {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2e} | {:.1}M | {} | {:.2e} |",
            m.model,
            m.parameters,
            m.training_flops,
            m.training_tokens / 1e6,
            pct(g.accuracy),
            g.flops
        );
    }
    let _ = writeln!(
        s,
        "\nRouting decision after the probes: {:.0} ns of CPU (mean).",
        r.routing_ns
    );
    let _ = writeln!(
        s,
        "\nProbes ({}): {:.1} generations, {:.2e} FLOPs ({} verifier), {:.3} CPU-s per question.\n",
        r.probes.label,
        r.probes.generations,
        r.probes.flops,
        pct(r.probes.verifier_share),
        r.probes.seconds
    );
    let _ = writeln!(s, "Compute-optimal over the ladder (2-fold CV) against each model's best option at no more FLOPs (paired difference, points, 95% CI):\n");
    let mut head =
        "| FLOPs budget | compute-optimal | FLOPs used (verifier) | probes discarded |".to_string();
    let mut rule = "|---|---|---|---|".to_string();
    for single in r
        .versus
        .first()
        .map(|v| v.best_single.as_slice())
        .unwrap_or(&[])
    {
        let _ = write!(head, " {} best | diff |", single.model);
        rule.push_str("---|---|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    for v in &r.versus {
        let mut line = format!(
            "| {:.1e} | {} | {:.2e} ({}) | {} |",
            v.budget_flops,
            pct(v.compute_optimal.accuracy),
            v.compute_optimal.flops,
            pct(v.compute_optimal.verifier_share),
            if v.probed_share > 0.0 {
                pct(v.moved_share)
            } else {
                "no probes".into()
            }
        );
        for single in &v.best_single {
            match (&single.point, &single.difference) {
                (Some(p), Some(c)) => {
                    let _ = write!(line, " {} ({}) | {} |", pct(p.accuracy), p.label, ci(c));
                }
                _ => line.push_str(" - | - |"),
            }
        }
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "\nPer level: a smaller model's cheapest option reaching a larger model's baseline (FLOPs ratio = its FLOPs / the baseline's; the option is picked on the level's own questions, the small model's best case):\n");
    let _ = writeln!(s, "| level | baseline | baseline acc. | baseline FLOPs | smaller model's match | FLOPs ratio | verifier share | diff | break-even queries (R) |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for e in &r.exchange {
        match (&e.matched, e.flops_ratio, &e.difference) {
            (Some(m), Some(ratio), Some(d)) => {
                let even = match (e.break_even_queries, e.inference_to_pretraining) {
                    (Some(q), Some(r)) => format!("{q:.2e} (R = {r:.2})"),
                    _ => "never (cheaper per query too)".into(),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.2e} | {} ({}) | {:.2}x | {} | {} | {} |",
                    e.level,
                    e.baseline,
                    pct(e.baseline_accuracy),
                    e.baseline_flops,
                    m.label,
                    pct(m.accuracy),
                    ratio,
                    pct(m.verifier_share),
                    ci(d),
                    even
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.2e} | not reached (best: {} {}) | - | - | - | - |",
                    e.level,
                    e.baseline,
                    pct(e.baseline_accuracy),
                    e.baseline_flops,
                    e.best.label,
                    pct(e.best.accuracy)
                );
            }
        }
    }
    s
}

pub fn plots(out: &Path, r: &Report) -> anyhow::Result<()> {
    register_font();
    for (file, title, x_desc, seconds) in [
        (
            "flops_accuracy",
            "Accuracy vs inference FLOPs per query",
            "FLOPs per query (log10)",
            false,
        ),
        (
            "seconds_accuracy",
            "Accuracy vs CPU-seconds per query (estimated)",
            "CPU-seconds per query (log10)",
            true,
        ),
    ] {
        let x = |p: &Point| {
            if seconds {
                p.seconds.max(1e-6).log10()
            } else {
                p.flops.max(1.0).log10()
            }
        };
        let mut series: Vec<Series> = r
            .curves
            .iter()
            .filter(|(name, _)| {
                name.ends_with("self_consistency") || name.ends_with("weighted_best_of_n")
            })
            .map(|(name, ps)| {
                (
                    name.clone(),
                    ps.iter().map(|p| (x(p), 100.0 * p.accuracy)).collect(),
                )
            })
            .collect();
        series.push((
            "compute-optimal over the ladder (CV)".into(),
            r.compute_optimal
                .iter()
                .map(|p| (x(p), 100.0 * p.accuracy))
                .collect(),
        ));
        series.push((
            "Pareto frontier (all options)".into(),
            if seconds {
                &r.frontier_seconds
            } else {
                &r.frontier
            }
            .iter()
            .map(|p| (x(p), 100.0 * p.accuracy))
            .collect(),
        ));
        // The bigger-model curve: one greedy pass of each model of the ladder.
        series.push((
            "greedy, one pass of each model (xs, s, l)".into(),
            r.greedy
                .iter()
                .map(|g| (x(g), 100.0 * g.accuracy))
                .collect(),
        ));
        let title = format!("{title} ({} questions)", r.questions);
        png_and_svg!(out, file, (1100, 700), |area| log_chart(
            &area,
            &title,
            x_desc,
            LogAxis::Ten,
            &series,
            None
        ));
    }
    Ok(())
}
