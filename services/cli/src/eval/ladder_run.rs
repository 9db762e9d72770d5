//! `ponder eval --flops`: gathers what the exchange-rate report needs for every
//! generator of the models manifest, then writes the report ([`super::exchange`]).
//!
//! Per model, under `--out`: its scored draw (`draws.jsonl` for the default model, the
//! file `ponder eval` already writes; `draws-<model>.jsonl` for the others) and its
//! greedy answers (`greedy.jsonl`, every model). Files already there are reused, so a
//! long draw is made once and the report re-derived in seconds; a missing one is made
//! with the bundled models.

use super::draws::{read_jsonl, Draw};
use super::ladder::{Greedy, Ladder, Rung};
use super::{draw_set, open_worker, progress_bar, Record, CONCURRENCY};
use futures::StreamExt;
use ponder_search::{GenRequest, Generate, SolutionFormat};
use ponder_worker::local::{LocalGenerator, LocalVerifier};
use ponder_worker::manifest::{ModelRole, ModelsDir};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct FlopsConfig {
    pub models: PathBuf,
    pub per_level: usize,
    pub seed: u64,
    /// N of the options; each model's draw has max(budgets) samples.
    pub budgets: Vec<u32>,
    pub out: PathBuf,
    /// The manifest's verifier that scores every draw, by name (None: the default one).
    pub verifier: Option<String>,
}

fn draws_file(out: &Path, model: &str, default: bool) -> PathBuf {
    if default {
        out.join("draws.jsonl")
    } else {
        out.join(format!("draws-{model}.jsonl"))
    }
}

pub async fn run(cfg: FlopsConfig) -> anyhow::Result<super::exchange::Report> {
    anyhow::ensure!(
        !cfg.budgets.is_empty() && cfg.budgets.iter().all(|&b| b >= 1),
        "--budgets must be positive"
    );
    let dir = ModelsDir::open(&cfg.models)?;
    let mut generators: Vec<_> = dir
        .manifest
        .models
        .iter()
        .filter(|m| m.role == ModelRole::Generator)
        .cloned()
        .collect();
    generators.sort_by_key(|m| m.parameters);
    anyhow::ensure!(
        generators.len() >= 2,
        "{}: --flops compares a ladder of generator models; the manifest has {}",
        cfg.models.display(),
        generators.len()
    );
    let default = dir
        .default_for(ModelRole::Generator)
        .map(|m| m.name.clone())
        .unwrap_or_default();
    anyhow::ensure!(
        default == generators[0].name,
        "--flops probes on the default generator, which must be the cheapest ({} is the default, {} the cheapest)",
        default,
        generators[0].name
    );
    // `--verifier` picks another of the manifest's verifiers (its size prices every scored
    // sample); an unknown name is an error that lists the verifiers.
    let verifier_entry = dir
        .select(ModelRole::Verifier, cfg.verifier.as_deref())?
        .clone();
    let format = SolutionFormat::default();
    let problems = ponder_arith::eval_sampler::eval_set(cfg.seed, cfg.per_level);
    std::fs::create_dir_all(&cfg.out)?;
    let n = *cfg.budgets.iter().max().expect("checked non-empty");
    let greedy_path = cfg.out.join("greedy.jsonl");
    let mut greedy: Vec<Greedy> = if greedy_path.is_file() {
        read_jsonl(&greedy_path)?
    } else {
        Vec::new()
    };
    let mut verifier: Option<LocalVerifier> = None;
    let mut rungs = Vec::new();
    for g in &generators {
        let path = draws_file(&cfg.out, &g.name, g.name == default);
        let has_greedy = greedy.iter().filter(|x| x.model == g.name).count() == problems.len();
        let model_path = dir.resolve(ModelRole::Generator, Some(&g.name))?;
        let mut generator = None;
        let draws: Vec<Draw> = if path.is_file() {
            read_jsonl(&path)?
        } else {
            let v = match verifier.take() {
                Some(v) => v,
                None => LocalVerifier::new(open_worker(
                    &dir.resolve(ModelRole::Verifier, Some(&verifier_entry.name))?,
                )?)?,
            };
            let gen = LocalGenerator::new(open_worker(&model_path)?);
            let what = format!("draw {}", g.name);
            let draws = draw_set(&gen, &v, &format, &problems, n, &what, &path).await?;
            verifier = Some(v);
            generator = Some(gen);
            draws
        };
        if !has_greedy {
            let gen = match generator {
                Some(g) => g,
                None => LocalGenerator::new(open_worker(&model_path)?),
            };
            greedy.retain(|x| x.model != g.name);
            greedy.extend(greedy_set(&gen, &format, &problems, &g.name).await?);
            let mut file = std::fs::File::create(&greedy_path)?;
            for x in &greedy {
                writeln!(file, "{}", serde_json::to_string(x)?)?;
            }
        }
        let runs_path = cfg.out.join("runs.jsonl");
        let runs: Vec<Record> = if g.name == default && runs_path.is_file() {
            read_jsonl(&runs_path)?
        } else {
            Vec::new()
        };
        let mut mine: Vec<Greedy> = greedy
            .iter()
            .filter(|x| x.model == g.name)
            .cloned()
            .collect();
        mine.sort_by_key(|x| x.index);
        rungs.push(Rung {
            model: g.name.clone(),
            parameters: g.parameters,
            training_flops: g.training_flops,
            draws: draws.into_iter().take(problems.len()).collect(),
            greedy: mine,
            runs,
        });
    }
    let ladder = Ladder::new(rungs, verifier_entry.parameters)?;
    super::exchange::report(&ladder, &cfg.budgets, &cfg.out)
}

/// One greedy (temperature 0) solution of every question: a model's single-pass
/// baseline, with what it cost (generator FLOPs only: nothing is scored).
async fn greedy_set(
    generator: &LocalGenerator,
    format: &SolutionFormat,
    problems: &[ponder_arith::task::Problem],
    model: &str,
) -> anyhow::Result<Vec<Greedy>> {
    let bar = progress_bar(problems.len(), &format!("greedy {model}"))?;
    let limits = generator.limits();
    let mut results = futures::stream::iter(problems.iter().enumerate())
        .map(|(i, p)| async move {
            let prompt = format.prompt(&p.question);
            let max_tokens = format.max_solution_tokens.min(limits.room_after(&prompt));
            let start = Instant::now();
            let out = generator
                .generate(GenRequest {
                    prompt,
                    n: 1,
                    temperature: 0.0,
                    top_p: 1.0,
                    top_k: 0,
                    max_tokens,
                    stop: vec![],
                    seed: i as u64,
                    affinity: 0,
                    deadline: None,
                    request_id: String::new(),
                    tenant: 0,
                })
                .await?;
            let latency_s = start.elapsed().as_secs_f64();
            let sample = out.samples.first();
            let answer = sample
                .and_then(|s| format.answer(&s.text))
                .unwrap_or_default();
            Ok::<Greedy, anyhow::Error>(Greedy {
                model: model.to_string(),
                index: i,
                question: p.question.clone(),
                correct: answer == p.answer.to_string(),
                answer,
                tokens: sample.map_or(0, |s| u64::from(s.tokens)),
                flops: out.flops,
                latency_s,
                cpu_s: latency_s * super::ladder::cpu_per_wall(CONCURRENCY),
            })
        })
        .buffered(CONCURRENCY);
    let mut out = Vec::with_capacity(problems.len());
    while let Some(g) = results.next().await {
        out.push(g?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}
