//! The evaluation's plots, each as PNG and SVG: accuracy vs generation budget per
//! strategy (log2 x-axis), the same per difficulty bin, and compute-optimal against
//! best-of-N weighted with the efficiency ratio marked.
//!
//! The font is bundled (DejaVu Sans, its licence beside it) so a PNG renders the
//! same on any machine, without system font libraries.

use super::draws::Draw;
use super::fit::{FitReport, BON_WEIGHTED, CV_NAME, MAJORITY};
use super::{summarize, Record};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// A named line: (log2 of generations, accuracy in %).
pub(super) type Series = (String, Vec<(f64, f64)>);

/// Distinguishable line colours (Okabe-Ito), in series order.
const COLORS: [RGBColor; 9] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
    RGBColor(120, 120, 120),
];

pub(super) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            tracing::warn!("the bundled font did not load; PNG text may be missing");
        }
    });
}

/// The x axis of a chart: log2 of a budget from 1 up, or log10 of a cost.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum LogAxis {
    Two,
    Ten,
}

fn chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    series: &[Series],
    reference: Option<(f64, String)>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    log_chart(area, title, x_desc, LogAxis::Two, series, reference)
}

pub(super) fn log_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    axis: LogAxis,
    series: &[Series],
    reference: Option<(f64, String)>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let xs = || series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let ys = || series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let x_lo = xs().fold(f64::INFINITY, f64::min);
    let x_lo = match axis {
        LogAxis::Two => x_lo.min(0.0),
        LogAxis::Ten => x_lo.floor(),
    };
    let x_hi = xs().fold(f64::NEG_INFINITY, f64::max).max(x_lo + 1.0);
    let y_lo = ys()
        .chain(reference.iter().map(|r| r.0))
        .fold(100.0, f64::min);
    let y_lo = ((y_lo - 2.0) / 5.0).floor() * 5.0;
    let mut ch = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(48)
        .build_cartesian_2d((x_lo - 0.2)..(x_hi + 0.2), y_lo.max(0.0)..100.5)?;
    ch.configure_mesh()
        .x_desc(x_desc)
        .y_desc("accuracy (%)")
        .x_labels(((x_hi - x_lo) as usize + 1).min(12))
        .x_label_formatter(&|x| match axis {
            LogAxis::Two => format!("{}", 2f64.powf(*x).round()),
            LogAxis::Ten => format!("{:.0e}", 10f64.powf(*x)),
        })
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        ch.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        ch.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    if let Some((y, label)) = reference {
        let grey = BLACK.mix(0.45);
        ch.draw_series(DashedLineSeries::new(
            vec![(x_lo - 0.2, y), (x_hi + 0.2, y)],
            6,
            4,
            grey.stroke_width(1),
        ))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey));
    }
    ch.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// Draws with `f` into `<out>/<name>.png` and `<out>/<name>.svg`.
macro_rules! png_and_svg {
    ($out:expr, $name:expr, $size:expr, |$area:ident| $body:expr) => {{
        let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("plotting {}: {e:?}", $name);
        let png = $out.join(format!("{}.png", $name));
        {
            let $area = BitMapBackend::new(&png, $size).into_drawing_area();
            $area.fill(&WHITE).map_err(|e| err(&e))?;
            $body.map_err(|e| err(&e))?;
            $area.present().map_err(|e| err(&e))?;
        }
        let svg = $out.join(format!("{}.svg", $name));
        {
            let $area = SVGBackend::new(&svg, $size).into_drawing_area();
            $area.fill(&WHITE).map_err(|e| err(&e))?;
            $body.map_err(|e| err(&e))?;
            $area.present().map_err(|e| err(&e))?;
        }
    }};
}

pub(super) use png_and_svg;

/// Accuracy per budget for every strategy in `records`.
fn by_budget(records: &[Record], use_generations: bool) -> Vec<Series> {
    let cells = summarize(records);
    let mut names: Vec<String> = cells.iter().map(|c| c.strategy.clone()).collect();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let points = cells
                .iter()
                .filter(|c| c.strategy == name)
                .map(|c| {
                    let x = if use_generations {
                        c.mean_generations.max(1.0)
                    } else {
                        c.budget as f64
                    };
                    (x.log2(), 100.0 * c.accuracy)
                })
                .collect();
            (name, points)
        })
        .collect()
}

pub fn draw_all(
    out: &Path,
    records: &[Record],
    draws: &[Draw],
    report: &FitReport,
) -> anyhow::Result<()> {
    register_font();
    let mut all: Vec<Record> = records.to_vec();
    all.extend(report.cv_records.iter().cloned());
    let series = by_budget(&all, false);
    png_and_svg!(out, "accuracy_vs_budget", (900, 600), |area| chart(
        &area,
        &format!("Accuracy vs generation budget ({} questions)", draws.len()),
        "generation budget (log2)",
        &series,
        None,
    ));

    let budgets = &report.summary.budgets;
    let bins = &report.summary.bins;
    png_and_svg!(out, "accuracy_by_bin", (1500, 900), |area| {
        let panels = area.split_evenly((2, 3));
        let mut result = Ok(());
        for (panel, bin) in panels.iter().zip(bins) {
            let series: Vec<Series> = bin
                .accuracy
                .iter()
                .map(|(name, accs)| {
                    let points = budgets
                        .iter()
                        .zip(accs)
                        .filter_map(|(&b, a)| a.map(|a| ((b as f64).log2(), 100.0 * a)))
                        .collect();
                    (name.clone(), points)
                })
                .collect();
            let title = format!(
                "bin {} ({} questions, mean level {:.1})",
                bin.bin, bin.questions, bin.mean_level
            );
            result = result.and(chart(panel, &title, "budget (log2)", &series, None));
        }
        result
    });

    let compared: Vec<Record> = all
        .iter()
        .filter(|r| [CV_NAME, BON_WEIGHTED, MAJORITY].contains(&r.strategy.as_str()))
        .cloned()
        .collect();
    let series = by_budget(&compared, true);
    let reference = report.summary.efficiency.as_ref().map(|e| {
        let label = match (e.ratio, e.matched_mean_generations) {
            (Some(ratio), Some(g)) => format!(
                "best-of-N weighted at {}: {:.1}%; compute-optimal matches it with {:.1} generations ({:.1}x less)",
                e.target_budget,
                100.0 * e.target_accuracy,
                g,
                ratio
            ),
            _ => format!(
                "best-of-N weighted at {}: {:.1}% (compute-optimal does not reach it)",
                e.target_budget,
                100.0 * e.target_accuracy
            ),
        };
        (100.0 * e.target_accuracy, label)
    });
    png_and_svg!(out, "compute_optimal_vs_best_of_n", (900, 600), |area| {
        chart(
            &area,
            "Compute-optimal (2-fold CV) vs best-of-N weighted and majority",
            "mean generations used (log2)",
            &series,
            reference.clone(),
        )
    });
    Ok(())
}
