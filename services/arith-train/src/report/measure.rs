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
use ponder_search::strategy::revisions;
use ponder_search::SolutionFormat;

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

/// Revisions guided by the verifier, as the `revisions` strategy makes them
/// (docs/strategies.md): each attempt keeps its lines before the step the verifier
/// doubts most, the model proposes [`revisions::PROPOSALS`] next lines at T=0.8, the
/// verifier scores them and the best-scored one that is not the doubted line again is
/// kept, then the model finishes the solution at T=0.8.
pub async fn guided_revisions(
    gen: &ModelWorker,
    verifier: &ModelWorker,
    attempts: &[(&Problem, &str)],
    seed: u64,
) -> Result<Vec<GuidedRevision>> {
    let step_scores = |question: String, candidates: Vec<Vec<String>>| async move {
        let resp = verifier
            .score(ScoreRequest {
                question,
                candidates,
            })
            .await?;
        Ok::<_, anyhow::Error>(resp.scores)
    };
    let scores: Vec<Vec<f32>> = stream::iter(attempts)
        .map(|(p, text)| {
            let steps = text.lines().map(String::from).collect();
            async move {
                Ok::<_, anyhow::Error>(
                    step_scores(p.question.clone(), vec![steps])
                        .await?
                        .pop()
                        .unwrap_or_default(),
                )
            }
        })
        .buffered(8)
        .try_collect()
        .await?;
    // (kept lines, the doubted line) per attempt.
    let cuts: Vec<(Vec<String>, String)> = attempts
        .iter()
        .zip(&scores)
        .map(|((_, text), scores)| {
            let lines: Vec<String> = text.lines().map(String::from).collect();
            let at = revisions::doubted_step(scores)
                .unwrap_or(0)
                .min(lines.len());
            let doubted = lines.get(at).cloned().unwrap_or_default();
            (lines[..at].to_vec(), doubted)
        })
        .collect();
    // The strategy's own prompt for a partial solution (the bundled format's).
    let format = SolutionFormat::default();
    let prompt_of = |p: &Problem, lines: &[String]| format.partial_prompt(&p.question, lines);
    let next_step = SamplingParams {
        stop: vec!["\n".into()],
        max_tokens: 256,
        ..sampled(seed)
    };
    let prompts = attempts
        .iter()
        .zip(&cuts)
        .map(|((p, _), (kept, _))| prompt_of(p, kept))
        .collect();
    let proposals = complete(gen, prompts, revisions::PROPOSALS, &next_step).await?;
    let readings: Vec<Vec<f32>> = stream::iter(attempts.iter().zip(&cuts).zip(&proposals))
        .map(|(((p, _), (kept, _)), props)| {
            let candidates = props
                .iter()
                .map(|step| kept.iter().chain([step]).cloned().collect())
                .collect();
            async move {
                let scores = step_scores(p.question.clone(), candidates).await?;
                Ok::<_, anyhow::Error>(
                    scores
                        .iter()
                        .map(|s| s.last().copied().unwrap_or(0.0))
                        .collect(),
                )
            }
        })
        .buffered(8)
        .try_collect()
        .await?;
    let heads: Vec<Vec<String>> = cuts
        .iter()
        .zip(&proposals)
        .zip(&readings)
        .map(|(((kept, doubted), props), scores)| {
            let step = revisions::pick_proposal(props, scores, doubted).unwrap_or("");
            kept.iter().cloned().chain([step.to_string()]).collect()
        })
        .collect();
    // A head that already states the answer is a whole solution.
    let open: Vec<usize> = (0..heads.len())
        .filter(|&i| {
            !heads[i]
                .last()
                .is_some_and(|l| l.starts_with(solution::ANSWER_PREFIX))
        })
        .collect();
    let rests = complete(
        gen,
        open.iter()
            .map(|&i| prompt_of(attempts[i].0, &heads[i]))
            .collect(),
        1,
        &sampled(seed + 1),
    )
    .await?;
    let mut revised: Vec<String> = heads.iter().map(|h| h.join("\n")).collect();
    for (&i, rest) in open.iter().zip(&rests) {
        revised[i].push('\n');
        revised[i].push_str(&rest[0]);
    }
    let mut generated: Vec<usize> = proposals
        .iter()
        .map(|props| props.iter().map(|p| tokens(p)).sum())
        .collect();
    for (&i, rest) in open.iter().zip(&rests) {
        generated[i] += tokens(&rest[0]);
    }
    Ok(revised
        .into_iter()
        .zip(&cuts)
        .zip(generated)
        .map(|((text, (kept, _)), generated_tokens)| GuidedRevision {
            text,
            replaced_line: kept.len(),
            generated_tokens,
        })
        .collect())
}

/// A revision guided by the verifier.
pub struct GuidedRevision {
    pub text: String,
    /// The attempt's line it replaced (0-based).
    pub replaced_line: usize,
    /// Tokens generated for it: every proposal and the finish.
    pub generated_tokens: usize,
}

/// Tokens generated for a completion `text` returned by [`complete`]: the bundled
/// tokenizer is one token per character, plus the end (EOS or the stop string),
/// which the text no longer holds.
pub fn tokens(text: &str) -> usize {
    text.chars().count() + 1
}
