//! Sampling and scoring through the engine's model workers (the path a cluster serves),
//! with enough requests in flight that the worker batches them.

use super::stats::ScoredSample;
use crate::vocab::EOS;
use anyhow::Result;
use futures::stream::{self, StreamExt, TryStreamExt};
use ponder_arith::checker::check_solution;
use ponder_arith::solution;
use ponder_arith::task::Problem;
use ponder_engine::{GenerateRequest, ModelWorker, SamplingParams, ScoreRequest};

/// Longest solution generated (the longest canonical solution is ~1,000 characters).
pub const MAX_TOKENS: usize = 1500;
/// Sequences in flight at once (the worker's default batch limit).
pub const IN_FLIGHT_SEQUENCES: usize = 256;

pub fn greedy() -> SamplingParams {
    SamplingParams {
        max_tokens: MAX_TOKENS,
        ..Default::default()
    }
}

/// Sampling at T=0.8 (the temperature every sampled figure uses), seeded.
pub fn sampled(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 0.8,
        max_tokens: MAX_TOKENS,
        seed,
        ..Default::default()
    }
}

fn strip(text: &str) -> String {
    text.trim_end_matches(EOS).trim_end().to_string()
}

/// `n` completions of each prompt, in order.
pub async fn complete(
    worker: &ModelWorker,
    prompts: Vec<String>,
    n: u32,
    params: &SamplingParams,
) -> Result<Vec<Vec<String>>> {
    let width = (IN_FLIGHT_SEQUENCES / n.max(1) as usize).max(1);
    let context = worker.info().context_length;
    stream::iter(prompts)
        .map(|prompt| {
            // A revision prompt holds a whole wrong attempt: the solution then gets what
            // is left of the context (a token covers at least one byte, +2 for specials).
            let room = context.saturating_sub(prompt.len() + 2).max(1);
            let req = GenerateRequest {
                prompt,
                n,
                params: SamplingParams {
                    max_tokens: params.max_tokens.min(room),
                    ..params.clone()
                },
            };
            async move {
                let resp = worker.generate(req).await?;
                Ok::<_, anyhow::Error>(resp.completions.iter().map(|c| strip(&c.text)).collect())
            }
        })
        .buffered(width)
        .try_collect()
        .await
}

/// Whether each text answers its problem right.
pub fn right(problem: &Problem, text: &str) -> bool {
    solution::extract_answer(text) == Some(problem.answer)
}

/// Scores every non-empty sample of each problem with the verifier and labels its lines
/// with the checker; returns (problem index, scored sample) pairs.
pub async fn score(
    verifier: &ModelWorker,
    problems: &[&Problem],
    samples: &[Vec<String>],
) -> Result<Vec<(usize, ScoredSample)>> {
    let jobs: Vec<(usize, Vec<String>)> = problems
        .iter()
        .zip(samples)
        .enumerate()
        .map(|(i, (_, texts))| (i, texts.iter().filter(|t| !t.is_empty()).cloned().collect()))
        .filter(|(_, texts): &(usize, Vec<String>)| !texts.is_empty())
        .collect();
    let scored: Vec<Vec<(usize, ScoredSample)>> = stream::iter(jobs)
        .map(|(i, texts)| {
            let problem = problems[i];
            let req = ScoreRequest {
                question: problem.question.clone(),
                candidates: texts
                    .iter()
                    .map(|t| t.lines().map(String::from).collect())
                    .collect(),
            };
            async move {
                let resp = verifier.score(req).await?;
                let out = texts
                    .iter()
                    .zip(resp.scores)
                    .map(|(text, scores)| {
                        let checked = check_solution(&problem.question, text);
                        let on_track = checked.steps.iter().map(|s| s.on_track).collect();
                        let sample = ScoredSample {
                            scores,
                            on_track,
                            correct: checked.correct,
                        };
                        (i, sample)
                    })
                    .collect::<Vec<_>>();
                Ok::<_, anyhow::Error>(out)
            }
        })
        .buffered(8)
        .try_collect()
        .await?;
    Ok(scored.into_iter().flatten().collect())
}
