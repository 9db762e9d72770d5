//! `ponder fit-latency`: measures the real engine on each bundled model, one call at a
//! time, fits the recorded backend's latency model to it, and checks the fit on calls
//! that run together (docs/scaling.md).
//!
//! Why calls alone for the fit: the model's coefficients are per call and per decode
//! step; how calls share the batch loop is the simulation's part
//! (`ponder_worker::recorded::sim`), so concurrent calls are the held-out check of
//! both together, not fitted data.
//!
//! The calls fitted are a sweep of sample and candidate counts (so that every
//! coefficient is determined) and the workload's own calls ([`workload`]), the default
//! generator's and the verifier's, as the bundled policy makes them.

mod workload;

use crate::models;
use ponder_search::format::SolutionFormat;
use ponder_search::strategy::compute_optimal::Policy;
use ponder_search::{
    Candidate, GenOutput, GenRequest, Generate, Sample, Score, ScoreOutput, ScoreRequest,
};
use ponder_worker::local::{LocalGenerator, LocalVerifier};
use ponder_worker::recorded::latency::{
    attended_context, fit_error, fit_generate, fit_score, score_attended_context, ConcurrentCheck,
    FitError, GenerateMeasure, LatencyModel, ScoreMeasure,
};
use ponder_worker::recorded::sim::{makespan, Work};
use ponder_worker::recorded::store::{candidate_bounds, token_shares};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Samples per generate call measured (the search's wave sizes and past them).
const SAMPLES: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Candidates per score call measured.
const CANDIDATES: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Calls run together in the held-out check.
const TOGETHER: [u32; 3] = [2, 4, 8];

pub struct FitLatency {
    pub models: Option<PathBuf>,
    /// A recording root: each model's file goes to `<out>/<role>-<model dir>/`.
    pub out: PathBuf,
    pub repeats: usize,
    /// Workload questions per level (0: the sweep only).
    pub workload: usize,
    /// Only the default generator (and the verifier).
    pub default_only: bool,
}

/// Fits every bundled model and writes the files; prints a table.
pub async fn run(args: FitLatency) -> anyhow::Result<()> {
    let bundled = models::bundled(args.models.as_deref(), None)?;
    let format = SolutionFormat::default();
    let machine = machine();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 1 {
        // Not an error: a node with every core of a host is a fit worth having too.
        eprintln!(
            "note: fitting with {cores} cores visible, so small models' wide passes use \
             them all; a node pinned to one core (run-cluster.sh --pin, a pod with a \
             1-CPU limit) is fitted under `taskset -c 0` (docs/scaling.md)"
        );
    }
    let mut samples_for_scoring = vec![];
    println!(
        "| model | calls fitted | median error | max error | calls together: median / max error |"
    );
    println!("|---|---|---|---|---|");
    // The verifier first: the workload's calls need both models.
    let verifier = match &bundled.verifier {
        Some(path) => {
            let worker = crate::eval::open_worker(path)?;
            Some((path, worker.clone(), LocalVerifier::new(worker)?))
        }
        None => None,
    };
    let policy = match &bundled.policy {
        Some(p) => Some(std::sync::Arc::new(Policy::from_file(p)?)),
        None => None,
    };
    let mut workload_scores = vec![];
    let others = if args.default_only {
        &[][..]
    } else {
        &bundled.other_generators[..]
    };
    let generators = std::iter::once(&bundled.generator).chain(others);
    for (i, path) in generators.enumerate() {
        let worker = crate::eval::open_worker(path)?;
        let generator = LocalGenerator::new(worker.clone());
        let (mut measures, outputs) = measure_generate(&generator, &format, args.repeats).await?;
        if i == 0 {
            samples_for_scoring = outputs;
            if let Some((_, _, verifier)) = verifier.as_ref().filter(|_| args.workload > 0) {
                let calls =
                    workload::measure(&generator, verifier, policy.clone(), &format, args.workload)
                        .await?;
                measures.extend(calls.generate);
                workload_scores = calls.score;
            }
        }
        let (cost, error) = fit_generate(&measures)?;
        let concurrent = generate_together(&generator, &format, cost, worker.max_samples()).await?;
        let model = LatencyModel {
            model_id: worker.info().id.clone(),
            machine: machine.clone(),
            threads: worker.threads(),
            generate: Some(cost),
            score: None,
            error,
            generate_measures: measures,
            score_measures: vec![],
            concurrent,
        };
        write(&args.out, "generator", path, &model)?;
    }
    if let Some((path, worker, verifier)) = &verifier {
        let mut measures = measure_score(verifier, &samples_for_scoring, args.repeats).await?;
        measures.extend(workload_scores);
        let (cost, error) = fit_score(&measures)?;
        let concurrent = score_together(verifier, &samples_for_scoring, cost).await?;
        let model = LatencyModel {
            model_id: worker.info().id.clone(),
            machine: machine.clone(),
            threads: worker.threads(),
            generate: None,
            score: Some(cost),
            error,
            generate_measures: vec![],
            score_measures: measures,
            concurrent,
        };
        write(&args.out, "verifier", path, &model)?;
    }
    Ok(())
}

fn machine() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{} ({cores} cores)", host.trim())
}

fn write(root: &Path, role: &str, model: &Path, fit: &LatencyModel) -> anyhow::Result<()> {
    let dir = crate::embedded::recording_dir(root, role, model);
    std::fs::create_dir_all(&dir)?;
    fit.save(&dir)?;
    let together = together_error(&fit.concurrent);
    println!(
        "| {} ({role}) | {} | {:.1}% | {:.1}% | {:.1}% / {:.1}% |",
        fit.model_id,
        fit.generate_measures.len() + fit.score_measures.len(),
        100.0 * fit.error.median,
        100.0 * fit.error.max,
        100.0 * together.median,
        100.0 * together.max
    );
    Ok(())
}

fn gen_request(format: &SolutionFormat, prompt: String, n: u32, seed: u64) -> GenRequest {
    GenRequest {
        prompt,
        n,
        temperature: 0.8,
        top_p: 1.0,
        top_k: 0,
        max_tokens: format.max_solution_tokens.min(400),
        stop: vec![],
        seed,
        affinity: 0,
        deadline: None,
        request_id: String::new(),
        tenant: 0,
    }
}

/// Prompts as the strategies send them: a question's, and (every other call) the
/// question's with the first steps of a solution after it, as step-level search does.
fn prompts(format: &SolutionFormat, count: usize) -> Vec<String> {
    let problems = ponder_arith::eval_sampler::eval_set(7, count.div_ceil(6).max(1));
    problems
        .iter()
        .cycle()
        .take(count)
        .enumerate()
        .map(|(i, p)| {
            let prompt = format.prompt(&p.question);
            if i % 2 == 1 {
                let steps = ponder_arith::solution::solve(&p.question)
                    .map(|s| {
                        s.steps
                            .iter()
                            .take(2)
                            .map(|l| format!("{l}\n"))
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                prompt + &steps
            } else {
                prompt
            }
        })
        .collect()
}

/// Each sample count, `repeats` times, one call at a time.
async fn measure_generate(
    generator: &LocalGenerator,
    format: &SolutionFormat,
    repeats: usize,
) -> anyhow::Result<(Vec<GenerateMeasure>, Vec<(String, Vec<Sample>)>)> {
    let prompts = prompts(format, SAMPLES.len() * repeats);
    let mut measures = vec![];
    let mut outputs = vec![];
    for (i, prompt) in prompts.into_iter().enumerate() {
        let n = SAMPLES[i % SAMPLES.len()];
        let req = gen_request(format, prompt.clone(), n, 1000 + i as u64);
        let started = Instant::now();
        let out = generator.generate(req).await?;
        let seconds = started.elapsed().as_secs_f64();
        measures.push(generate_measure(n, &out, seconds));
        outputs.push((prompt, out.samples));
    }
    Ok((measures, outputs))
}

/// Calls of `n` = 8 started together, against the simulated makespan of the same work.
async fn generate_together(
    generator: &LocalGenerator,
    format: &SolutionFormat,
    cost: ponder_worker::recorded::latency::GenerateCost,
    max_samples: u32,
) -> anyhow::Result<Vec<ConcurrentCheck>> {
    let n = 8;
    let mut checks = vec![];
    for (round, calls) in TOGETHER.into_iter().enumerate() {
        let prompts = prompts(format, calls as usize + 6 * round);
        let reqs: Vec<GenRequest> = prompts
            .into_iter()
            .skip(6 * round)
            .enumerate()
            .map(|(i, p)| gen_request(format, p, n, 5000 + 100 * round as u64 + i as u64))
            .collect();
        let started = Instant::now();
        let outs =
            futures::future::try_join_all(reqs.into_iter().map(|r| generator.generate(r))).await?;
        let measured_s = started.elapsed().as_secs_f64();
        let works = outs
            .iter()
            .map(|o| Work::Generate {
                prompt_tokens: o.prompt_tokens,
                uncached_prompt_tokens: o.prompt_tokens - o.cached_prompt_tokens,
                sample_tokens: o.samples.iter().map(|s| s.tokens).collect(),
            })
            .collect();
        let modelled_s = makespan(
            Some(cost),
            None,
            max_samples as usize,
            generator.worker().max_batch_tokens(),
            works,
        );
        checks.push(ConcurrentCheck {
            calls,
            n,
            measured_s,
            modelled_s,
        });
    }
    Ok(checks)
}

/// Candidates as the strategies score them: a question and a sampled solution's steps.
fn candidates(
    samples: &[(String, Vec<Sample>)],
    count: u32,
    offset: usize,
) -> (String, Vec<Candidate>) {
    let (prompt, _) = &samples[offset % samples.len()];
    let question = prompt
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("Q: ")
        .to_string();
    let all: Vec<&Sample> = samples.iter().flat_map(|(_, s)| s).collect();
    let candidates = (0..count as usize)
        .map(|j| {
            let text = &all[(offset * 7 + j) % all.len()].text;
            Candidate {
                steps: text
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
            }
        })
        .collect();
    (question, candidates)
}

fn score_request(question: String, candidates: Vec<Candidate>) -> ScoreRequest {
    ScoreRequest {
        question,
        candidates,
        deadline: None,
        affinity: 0,
        request_id: String::new(),
        tenant: 0,
    }
}

async fn measure_score(
    verifier: &LocalVerifier,
    samples: &[(String, Vec<Sample>)],
    repeats: usize,
) -> anyhow::Result<Vec<ScoreMeasure>> {
    anyhow::ensure!(!samples.is_empty(), "no generator samples to score");
    let mut measures = vec![];
    for i in 0..CANDIDATES.len() * repeats {
        let count = CANDIDATES[i % CANDIDATES.len()];
        let (question, cands) = candidates(samples, count, i);
        let req = score_request(question, cands);
        let bounds = candidate_bounds(&req, &verifier.cost());
        let started = Instant::now();
        let out = verifier.score(req).await?;
        measures.push(score_measure(
            &bounds,
            &out,
            started.elapsed().as_secs_f64(),
        ));
    }
    Ok(measures)
}

async fn score_together(
    verifier: &LocalVerifier,
    samples: &[(String, Vec<Sample>)],
    cost: ponder_worker::recorded::latency::ScoreCost,
) -> anyhow::Result<Vec<ConcurrentCheck>> {
    let n = 8;
    let mut checks = vec![];
    for (round, calls) in TOGETHER.into_iter().enumerate() {
        let reqs: Vec<ScoreRequest> = (0..calls as usize)
            .map(|i| {
                let (q, c) = candidates(samples, n, 100 + 10 * round + i);
                score_request(q, c)
            })
            .collect();
        let bounds: Vec<Vec<u64>> = reqs
            .iter()
            .map(|r| candidate_bounds(r, &verifier.cost()))
            .collect();
        let started = Instant::now();
        let outs =
            futures::future::try_join_all(reqs.into_iter().map(|r| verifier.score(r))).await?;
        let measured_s = started.elapsed().as_secs_f64();
        let works = outs
            .iter()
            .zip(&bounds)
            .map(|(o, b)| {
                let m = score_measure(b, o, 0.0);
                Work::Score {
                    tokens: m.tokens,
                    candidates: m.candidates,
                    attended_context: m.attended_context,
                }
            })
            .collect();
        let modelled_s = makespan(
            None,
            Some(cost),
            256,
            verifier.worker().max_batch_tokens(),
            works,
        );
        checks.push(ConcurrentCheck {
            calls,
            n,
            measured_s,
            modelled_s,
        });
    }
    Ok(checks)
}

/// A generate call of `n` samples' measure, from its output.
pub(crate) fn generate_measure(n: u32, out: &GenOutput, seconds: f64) -> GenerateMeasure {
    let tokens = out.samples.iter().map(|s| s.tokens);
    GenerateMeasure {
        n,
        prompt_tokens: out.prompt_tokens,
        uncached_prompt_tokens: out.prompt_tokens - out.cached_prompt_tokens,
        longest: tokens.clone().max().unwrap_or(0),
        sampled_tokens: tokens.clone().map(u64::from).sum(),
        attended_context: attended_context(out.prompt_tokens, tokens),
        seconds,
    }
}

/// A score call's measure: its candidates' shares of its tokens (as a recording splits
/// them, by `bounds`) give the context they attend to.
pub(crate) fn score_measure(bounds: &[u64], out: &ScoreOutput, seconds: f64) -> ScoreMeasure {
    ScoreMeasure {
        candidates: bounds.len() as u32,
        tokens: out.tokens,
        attended_context: score_attended_context(token_shares(out.tokens, bounds)),
        seconds,
    }
}

/// The error of the concurrent checks, as the fit's.
pub fn together_error(checks: &[ConcurrentCheck]) -> FitError {
    fit_error(checks.iter().map(|c| (c.modelled_s, c.measured_s)))
}
