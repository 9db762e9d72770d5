//! `ponder-arith report`: the figures the bundled models are judged by, computed
//! through the engine (the same path the cluster uses), on two question samplers.
//!
//! For every generator of the ladder and each sampler ([`questions::Sampler`]), per
//! level: greedy accuracy and pass@k at T=0.8. For the verifier, on every generator's
//! samples of the independent sampler, per level: step and final-answer AUROC and
//! first-error identification at a threshold fitted on validation-slice questions.
//! Revisions: on each generator's own wrong attempts, how often a revision is right
//! against a fresh sample. And the overlap between the questions measured and the
//! training stream, which must be 0. `--quick` runs the same code on a few questions.

pub mod measure;
pub mod prm_validation;
pub mod questions;
pub mod stats;

pub use stats::auroc;

use anyhow::Result;
use ponder_arith::checker::check_solution;
use ponder_arith::solution;
use ponder_arith::task::{self, Problem, LEVELS};
use ponder_engine::ModelWorker;
use questions::{Overlap, Sampler};
use serde::Serialize;
use stats::{FirstError, ScoredSample};

/// How much to measure.
#[derive(Debug, Clone, Serialize)]
pub struct ReportConfig {
    /// Questions per level for greedy accuracy (each sampler).
    pub greedy_per_level: usize,
    /// Questions per level sampled `k` times (pass@k, the verifier's and the revision
    /// figures); the first ones of the greedy set.
    pub sampled_per_level: usize,
    pub k: u32,
    /// Validation-slice questions per level (8 samples each) to fit the threshold on.
    pub threshold_per_level: usize,
    /// Wrong attempts per question revised.
    pub revisions_per_question: usize,
    /// Training-stream steps redrawn for the overlap count, and their data seed.
    pub overlap_steps: u64,
    pub training_seed: u64,
    /// The training stream: the training-style set follows its styles and the overlap
    /// redraws it.
    pub training_mix: task::TrainingMix,
}

impl ReportConfig {
    pub fn full() -> Self {
        ReportConfig {
            greedy_per_level: 500,
            sampled_per_level: 100,
            k: 64,
            threshold_per_level: 30,
            revisions_per_question: 2,
            overlap_steps: 5000,
            training_seed: 11,
            training_mix: task::TrainingMix::SHIPPED,
        }
    }

    /// A few minutes on 2 cores.
    pub fn quick() -> Self {
        ReportConfig {
            greedy_per_level: 20,
            sampled_per_level: 3,
            k: 8,
            threshold_per_level: 3,
            revisions_per_question: 1,
            overlap_steps: 100,
            training_seed: 11,
            training_mix: task::TrainingMix::SHIPPED,
        }
    }
}

/// A generator to measure.
pub struct GeneratorUnderTest {
    pub name: String,
    pub parameters: u64,
    pub worker: ModelWorker,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: ReportConfig,
    pub overlap: Overlap,
    pub verifier: Option<String>,
    /// Fitted on the validation slice, pooled over the generators' samples.
    pub threshold: Option<f32>,
    pub generators: Vec<GeneratorFigures>,
    /// Every sample the verifier scored, for analyses outside the report (`--scores-out`).
    #[serde(skip)]
    pub scored: Vec<ScoredRecord>,
}

/// One sample the verifier scored: the validation samples the threshold is fitted on,
/// then each generator's own samples, in the order they were scored.
#[derive(Debug, Clone, Serialize)]
pub struct ScoredRecord {
    /// `validation` or `own`.
    pub set: &'static str,
    pub generator: String,
    pub level: u8,
    pub question: String,
    #[serde(flatten)]
    pub sample: ScoredSample,
}

impl ScoredRecord {
    fn new(set: &'static str, generator: &str, problem: &Problem, sample: ScoredSample) -> Self {
        ScoredRecord {
            set,
            generator: generator.to_string(),
            level: problem.level,
            question: problem.question.clone(),
            sample,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GeneratorFigures {
    pub name: String,
    pub parameters: u64,
    pub samplers: Vec<SamplerFigures>,
    /// Per level, then all levels (level 0).
    pub verifier: Vec<VerifierFigures>,
    pub revisions: Vec<RevisionFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SamplerFigures {
    pub sampler: Sampler,
    pub levels: Vec<LevelFigures>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LevelFigures {
    pub level: u8,
    pub greedy_right: usize,
    pub greedy_total: usize,
    pub pass_right: usize,
    pub pass_total: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifierFigures {
    /// 0: all levels.
    pub level: u8,
    pub samples: usize,
    pub step_auroc: Option<f64>,
    pub final_auroc: Option<f64>,
    pub first_error: FirstError,
    pub first_error_f1: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevisionFigures {
    pub level: u8,
    pub attempts: usize,
    /// Revisions by the model alone, shown its whole wrong attempt.
    pub revised_right: usize,
    /// Revisions guided by the verifier (None without one).
    pub guided_right: Option<usize>,
    /// Guided revisions that replaced exactly the attempt's first wrong line.
    pub guided_at_first_error: Option<usize>,
    pub fresh_right: usize,
    /// Tokens generated, over all attempts: guided revisions (proposals included) and
    /// fresh samples.
    pub guided_tokens: Option<usize>,
    pub fresh_tokens: usize,
    /// Per attempt: (guided revision right, fresh sample right), for paired intervals
    /// (`bench/paired.py --revisions`).
    pub guided_and_fresh: Vec<(bool, bool)>,
}

fn pct(right: usize, total: usize) -> f64 {
    100.0 * right as f64 / total.max(1) as f64
}

/// The first `n` problems of each level of a level-ordered set.
fn first_of_each_level(set: &[Problem], n: usize) -> Vec<&Problem> {
    LEVELS
        .flat_map(|l| set.iter().filter(move |p| p.level == l).take(n))
        .collect()
}

/// What one generator's samples of the independent sampler leave for the verifier and
/// revision figures.
struct IndependentSamples<'a> {
    problems: Vec<&'a Problem>,
    samples: Vec<Vec<String>>,
}

async fn sampler_figures<'a>(
    cfg: &ReportConfig,
    gen: &ModelWorker,
    set: &'a [Problem],
) -> Result<(Vec<LevelFigures>, IndependentSamples<'a>)> {
    let prompts = set.iter().map(|p| solution::prompt(&p.question)).collect();
    let greedy = measure::complete(gen, prompts, 1, &measure::greedy()).await?;
    let sampled = first_of_each_level(set, cfg.sampled_per_level);
    let prompts = sampled
        .iter()
        .map(|p| solution::prompt(&p.question))
        .collect();
    let samples = measure::complete(gen, prompts, cfg.k, &measure::sampled(11)).await?;
    let levels = LEVELS
        .map(|level| {
            let of_level = |p: &Problem| p.level == level;
            let mut f = LevelFigures {
                level,
                greedy_right: 0,
                greedy_total: 0,
                pass_right: 0,
                pass_total: 0,
            };
            for (p, texts) in set.iter().zip(&greedy).filter(|(p, _)| of_level(p)) {
                f.greedy_total += 1;
                f.greedy_right += measure::right(p, &texts[0]) as usize;
            }
            for (p, texts) in sampled.iter().zip(&samples).filter(|(p, _)| of_level(p)) {
                f.pass_total += 1;
                f.pass_right += texts.iter().any(|t| measure::right(p, t)) as usize;
            }
            f
        })
        .collect();
    Ok((
        levels,
        IndependentSamples {
            problems: sampled,
            samples,
        },
    ))
}

/// Revisions of up to `per_question` wrong samples of each problem, against as many
/// fresh samples, per level.
async fn revision_figures(
    gen: &ModelWorker,
    verifier: Option<&ModelWorker>,
    own: &IndependentSamples<'_>,
    per_question: usize,
) -> Result<Vec<RevisionFigures>> {
    let mut attempts: Vec<(&Problem, &String)> = vec![];
    for (p, texts) in own.problems.iter().zip(&own.samples) {
        let wrong = texts.iter().filter(|t| !measure::right(p, t));
        attempts.extend(wrong.take(per_question).map(|t| (*p, t)));
    }
    let revision_prompts = attempts
        .iter()
        .map(|(p, t)| solution::revision_prompt(&p.question, std::slice::from_ref(*t)))
        .collect();
    let revised = measure::complete(gen, revision_prompts, 1, &measure::sampled(12)).await?;
    let fresh_prompts = attempts
        .iter()
        .map(|(p, _)| solution::prompt(&p.question))
        .collect();
    let fresh = measure::complete(gen, fresh_prompts, 1, &measure::sampled(12)).await?;
    let guided = match verifier {
        Some(v) => {
            let of: Vec<(&Problem, &str)> =
                attempts.iter().map(|(p, t)| (*p, t.as_str())).collect();
            Some(measure::guided_revisions(gen, v, &of, 14).await?)
        }
        None => None,
    };
    Ok(LEVELS
        .map(|level| {
            let mut f = RevisionFigures {
                level,
                attempts: 0,
                revised_right: 0,
                guided_right: guided.as_ref().map(|_| 0),
                guided_at_first_error: guided.as_ref().map(|_| 0),
                fresh_right: 0,
                guided_tokens: guided.as_ref().map(|_| 0),
                fresh_tokens: 0,
                guided_and_fresh: vec![],
            };
            for (i, (p, attempt)) in attempts
                .iter()
                .enumerate()
                .filter(|(_, a)| a.0.level == level)
            {
                f.attempts += 1;
                f.revised_right += measure::right(p, &revised[i][0]) as usize;
                let fresh_right = measure::right(p, &fresh[i][0]);
                f.fresh_right += fresh_right as usize;
                f.fresh_tokens += measure::tokens(&fresh[i][0]);
                if let Some(g) = guided.as_ref().map(|g| &g[i]) {
                    let first_error = check_solution(&p.question, attempt).first_wrong_line();
                    let right = measure::right(p, &g.text);
                    *f.guided_right.get_or_insert(0) += right as usize;
                    *f.guided_at_first_error.get_or_insert(0) +=
                        (first_error == Some(g.replaced_line)) as usize;
                    *f.guided_tokens.get_or_insert(0) += g.generated_tokens;
                    f.guided_and_fresh.push((right, fresh_right));
                }
            }
            f
        })
        .collect())
}

fn verifier_figures(
    scored: &[(usize, ScoredSample)],
    problems: &[&Problem],
    threshold: f32,
) -> Vec<VerifierFigures> {
    let figures = |level: u8| {
        let of_level: Vec<ScoredSample> = scored
            .iter()
            .filter(|(i, _)| level == 0 || problems[*i].level == level)
            .map(|(_, s)| s.clone())
            .collect();
        let first_error = FirstError::measure(&of_level, threshold);
        VerifierFigures {
            level,
            samples: of_level.len(),
            step_auroc: stats::step_auroc(&of_level),
            final_auroc: stats::final_auroc(&of_level),
            first_error,
            first_error_f1: first_error.f1(),
        }
    };
    LEVELS.chain([0]).map(figures).collect()
}

/// Measures every generator (and the verifier on their samples, when given).
pub async fn run(
    cfg: &ReportConfig,
    generators: &[GeneratorUnderTest],
    verifier: Option<(&str, &ModelWorker)>,
) -> Result<Report> {
    let sets: Vec<(Sampler, Vec<Problem>)> = Sampler::ALL
        .iter()
        .map(|&s| (s, s.eval_set(cfg.greedy_per_level, cfg.training_mix)))
        .collect();
    let all: Vec<&Problem> = sets.iter().flat_map(|(_, set)| set).collect();
    let overlap = Overlap::measure(
        &all,
        cfg.training_mix,
        cfg.training_seed,
        cfg.overlap_steps,
        4096,
    )?;
    let validation = questions::threshold_set(cfg.threshold_per_level);
    let validation_refs: Vec<&Problem> = validation.iter().collect();

    let mut figures = vec![];
    let mut own_samples = vec![];
    let mut validation_scored = vec![];
    let mut records = vec![];
    for g in generators {
        let mut samplers = vec![];
        let mut independent = None;
        for (sampler, set) in &sets {
            let (levels, samples) = sampler_figures(cfg, &g.worker, set).await?;
            samplers.push(SamplerFigures {
                sampler: *sampler,
                levels,
            });
            if *sampler == Sampler::Independent {
                independent = Some(samples);
            }
        }
        let independent = independent.expect("the independent sampler is measured");
        let revisions = revision_figures(
            &g.worker,
            verifier.map(|(_, v)| v),
            &independent,
            cfg.revisions_per_question,
        )
        .await?;
        if let Some((_, prm)) = verifier {
            let prompts = validation
                .iter()
                .map(|p| solution::prompt(&p.question))
                .collect();
            let samples = measure::complete(&g.worker, prompts, 8, &measure::sampled(13)).await?;
            let scored = measure::score(prm, &validation_refs, &samples).await?;
            records.extend(scored.iter().map(|(i, s)| {
                ScoredRecord::new("validation", &g.name, &validation[*i], s.clone())
            }));
            validation_scored.extend(scored.into_iter().map(|(_, s)| s));
        }
        figures.push(GeneratorFigures {
            name: g.name.clone(),
            parameters: g.parameters,
            samplers,
            verifier: vec![],
            revisions,
        });
        own_samples.push(independent);
    }
    let mut threshold = None;
    if let Some((_, prm)) = verifier {
        let t = stats::fit_threshold(&validation_scored);
        threshold = Some(t);
        for (f, own) in figures.iter_mut().zip(&own_samples) {
            let scored = measure::score(prm, &own.problems, &own.samples).await?;
            f.verifier = verifier_figures(&scored, &own.problems, t);
            records.extend(
                scored
                    .into_iter()
                    .map(|(i, s)| ScoredRecord::new("own", &f.name, own.problems[i], s)),
            );
        }
    }
    Ok(Report {
        config: cfg.clone(),
        overlap,
        verifier: verifier.map(|(name, _)| name.to_string()),
        threshold,
        generators: figures,
        scored: records,
    })
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3}"))
}

/// The report as Markdown tables.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let o = &r.overlap;
    let _ = writeln!(
        out,
        "overlap: {} evaluation questions (both samplers), {} training questions ({} steps of seed {}): {} shared, {} outside the evaluation slice\n",
        o.eval_questions, o.training_questions, o.steps, r.config.training_seed, o.shared, o.outside_evaluation_slice
    );
    for g in &r.generators {
        let _ = writeln!(out, "## {} ({} parameters)\n", g.name, g.parameters);
        let _ = writeln!(out, "| level | greedy indep. | greedy train-style | gap | pass@{k} indep. | pass@{k} train-style | gap |", k = r.config.k);
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        let (ind, sty) = (&g.samplers[0].levels, &g.samplers[1].levels);
        for (a, b) in ind.iter().zip(sty) {
            let (ga, gb) = (
                pct(a.greedy_right, a.greedy_total),
                pct(b.greedy_right, b.greedy_total),
            );
            let (pa, pb) = (
                pct(a.pass_right, a.pass_total),
                pct(b.pass_right, b.pass_total),
            );
            let _ = writeln!(
                out,
                "| {} | {ga:.1}% ({}) | {gb:.1}% ({}) | {:+.1} | {pa:.1}% ({}) | {pb:.1}% ({}) | {:+.1} |",
                a.level, a.greedy_total, b.greedy_total, gb - ga, a.pass_total, b.pass_total, pb - pa
            );
        }
        if !g.verifier.is_empty() {
            let _ = writeln!(
                out,
                "\nverifier {} on these samples (independent sampler, T=0.8), threshold {:.3}:\n",
                r.verifier.as_deref().unwrap_or("?"),
                r.threshold.unwrap_or(f32::NAN)
            );
            let _ = writeln!(out, "| level | samples | step AUROC | final AUROC | first error located | right accepted | F1 |");
            let _ = writeln!(out, "|---|---|---|---|---|---|---|");
            for v in &g.verifier {
                let fe = &v.first_error;
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {}/{} | {}/{} | {} |",
                    if v.level == 0 {
                        "all".to_string()
                    } else {
                        v.level.to_string()
                    },
                    v.samples,
                    opt(v.step_auroc),
                    opt(v.final_auroc),
                    fe.located,
                    fe.wrong,
                    fe.accepted,
                    fe.right,
                    opt(v.first_error_f1)
                );
            }
        }
        let _ = writeln!(
            out,
            "\nrevisions of its own wrong attempts (T=0.8) against fresh samples:\n"
        );
        let _ = writeln!(
            out,
            "| level | attempts | model's revision right | guided revision right | fresh right | guided at the first wrong line | tokens: guided / fresh |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for f in &g.revisions {
            let guided = f
                .guided_right
                .map_or("-".into(), |n| format!("{:.1}%", pct(n, f.attempts)));
            let located = f
                .guided_at_first_error
                .map_or("-".into(), |n| format!("{n}/{}", f.attempts));
            let per = |t: usize| t as f64 / f.attempts.max(1) as f64;
            let tokens = f.guided_tokens.map_or("-".into(), |g| {
                format!("{:.0} / {:.0}", per(g), per(f.fresh_tokens))
            });
            let _ = writeln!(
                out,
                "| {} | {} | {:.1}% | {guided} | {:.1}% | {located} | {tokens} |",
                f.level,
                f.attempts,
                pct(f.revised_right, f.attempts),
                pct(f.fresh_right, f.attempts)
            );
        }
        out.push('\n');
    }
    out
}
