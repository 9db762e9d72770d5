//! One query: validate, run the strategy in waves under the budget, report.
//!
//! Samples are drawn in waves of at most `wave_size`. A wave is launched only when its
//! worst-case cost fits in what the budget has left (see [`crate::budget`]); several
//! waves run at once so that a query uses more than one generator. Wave `w` samples
//! with a seed derived from the query's seed and `w`, and candidates are kept in wave
//! order, so the answer depends on the seed only, never on timing: `Solve` and
//! `SolveStream` agree, and a retried call on another node gives the same samples.

use crate::aggregate::Aggregation;
use crate::budget::{Budget, Ledger, Reservation, Usage};
use crate::error::{Result, SearchError};
use crate::format::SolutionFormat;
use crate::strategy::{select, Scored, StrategyKind, Tally};
use crate::traits::{Candidate, GenRequest, Generate, Score, ScoreRequest};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;

pub const DEFAULT_TEMPERATURE: f32 = 0.8;
/// Samples per generate call.
pub const DEFAULT_WAVE_SIZE: u32 = 8;
/// A sample shortened to fit a token budget is drawn only if it can be this long.
pub const MIN_SAMPLE_TOKENS: u32 = 32;
/// Waves of one query in flight at once.
pub const MAX_WAVES_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone)]
pub struct SolveParams {
    pub question: String,
    /// None: the best available strategy.
    pub strategy: Option<StrategyKind>,
    pub budget: Budget,
    pub seed: u64,
    /// None: [`DEFAULT_TEMPERATURE`].
    pub temperature: Option<f32>,
    pub aggregation: Aggregation,
    pub wave_size: u32,
    /// Carried to every generate/score call.
    pub request_id: String,
}

impl SolveParams {
    pub fn new(question: impl Into<String>, budget: Budget, seed: u64) -> Self {
        Self {
            question: question.into(),
            strategy: None,
            budget,
            seed,
            temperature: None,
            aggregation: Aggregation::Last,
            wave_size: DEFAULT_WAVE_SIZE,
            request_id: String::new(),
        }
    }
}

/// The best answer so far, sent after every wave.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub best_answer: Option<String>,
    pub best_score: f32,
    pub usage: Usage,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub answer: Option<String>,
    pub solution: String,
    pub score: f32,
    pub strategy: StrategyKind,
    pub usage: Usage,
    pub tallies: Vec<Tally>,
    pub candidates: usize,
    /// Wall time of the whole search.
    pub elapsed: std::time::Duration,
    /// Wall time during which at least one generate/score call was in flight.
    pub calls: std::time::Duration,
}

/// Answers `params.question` with `generator` (and `verifier`, when the strategy needs
/// one), never spending past `params.budget`. Sends a [`Progress`] after each wave to
/// `progress` if given.
pub async fn solve<G: Generate, S: Score>(
    generator: &G,
    verifier: Option<&S>,
    format: &SolutionFormat,
    params: SolveParams,
    progress: Option<mpsc::UnboundedSender<Progress>>,
) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let mut calls = std::time::Duration::ZERO;
    format.check_question(&params.question)?;
    let temperature = params.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    if !(temperature > 0.0 && temperature <= 2.0) {
        return Err(SearchError::invalid(format!(
            "temperature must be in (0, 2], got {temperature}"
        )));
    }
    if params.wave_size == 0 {
        return Err(SearchError::invalid("wave_size must be at least 1"));
    }
    let strategy = params
        .strategy
        .unwrap_or_else(|| StrategyKind::best_available(verifier.is_some()));
    let verifier = if strategy.needs_verifier() {
        Some(verifier.ok_or_else(|| {
            SearchError::Unavailable(format!(
                "strategy {} needs a verifier and none is available",
                strategy.name()
            ))
        })?)
    } else {
        None
    };
    let max_new = format.max_solution_tokens;
    let prompt = format.prompt(&params.question);
    // Worst-case cost of one sample of `t` tokens: the tokens, plus scoring its text
    // at `max_token_bytes` per token with (at most) one step per token.
    let verify = verifier.map(|v| v.cost());
    let per_token = 1 + verify.map_or(0, |c| {
        generator.limits().max_token_bytes as u64 + c.step_overhead
    });
    let fixed = verify.map_or(0, |c| params.question.len() as u64 + c.prompt_overhead);
    let sample_cost = |t: u32| fixed + t as u64 * per_token;
    let per_sample = sample_cost(max_new);
    let mut ledger = Ledger::new(params.budget);
    let mut candidates: Vec<Scored> = Vec::new();
    let mut in_flight = FuturesOrdered::new();
    let mut wave = 0u64;
    let affinity = params.seed ^ hash(&params.question);
    loop {
        // Launch what fits.
        while in_flight.len() < MAX_WAVES_IN_FLIGHT && !ledger.expired() {
            let mut k = params.wave_size.min(ledger.generations_left());
            let mut sample_tokens = max_new;
            let held = loop {
                if k == 0 {
                    break None;
                }
                let want = Reservation {
                    generations: k,
                    tokens: per_sample * k as u64,
                };
                if let Some(h) = ledger.reserve(want) {
                    break Some(h);
                }
                if k == 1 {
                    // Not even one full-length sample fits: draw a shorter one if a
                    // useful length still does (and nothing else is running).
                    let left = ledger.tokens_left().saturating_sub(fixed);
                    let t = (left / per_token).min(max_new as u64) as u32;
                    if t >= MIN_SAMPLE_TOKENS && in_flight.is_empty() {
                        sample_tokens = t;
                        break ledger.reserve(Reservation {
                            generations: 1,
                            tokens: sample_cost(t),
                        });
                    }
                }
                k -= 1;
            };
            let Some(held) = held else { break };
            let req = GenRequest {
                prompt: prompt.clone(),
                n: k,
                temperature,
                top_p: 1.0,
                max_tokens: sample_tokens,
                stop: vec![],
                seed: wave_seed(params.seed, wave),
                affinity,
                deadline: params.budget.deadline,
                request_id: params.request_id.clone(),
            };
            in_flight.push_back(run_wave(
                generator,
                verifier,
                format,
                &params.question,
                params.aggregation,
                req,
                held,
            ));
            wave += 1;
        }
        if in_flight.is_empty() {
            break;
        }
        let waiting = std::time::Instant::now();
        let Some(done) = in_flight.next().await else {
            break;
        };
        calls += waiting.elapsed();
        let (held, result) = done;
        match result {
            Ok((scored, spent)) => {
                ledger.settle(held, spent);
                candidates.extend(scored);
            }
            Err(e) => {
                ledger.release(held);
                return Err(e);
            }
        }
        if let Some(tx) = &progress {
            let best = select(strategy, &candidates);
            let _ = tx.send(Progress {
                best_answer: best.as_ref().and_then(|b| b.answer.clone()),
                best_score: best.as_ref().map_or(0.0, |b| b.score),
                usage: ledger.used(),
                message: format!(
                    "{} candidates, {} generations used",
                    candidates.len(),
                    ledger.used().generations
                ),
            });
        }
    }
    let Some(pick) = select(strategy, &candidates) else {
        return Err(if ledger.expired() {
            SearchError::DeadlineExceeded("no candidate finished before the deadline".into())
        } else {
            SearchError::invalid(format!(
                "budget.max_tokens is too small for one solution: one sample may cost {per_sample} tokens"
            ))
        });
    };
    Ok(Outcome {
        answer: pick.answer,
        solution: candidates[pick.winner].text.clone(),
        score: pick.score,
        strategy,
        usage: ledger.used(),
        tallies: pick.tallies,
        candidates: candidates.len(),
        elapsed: started.elapsed(),
        calls,
    })
}

/// Generates one wave and, if there is a verifier, scores it.
async fn run_wave<G: Generate, S: Score>(
    generator: &G,
    verifier: Option<&S>,
    format: &SolutionFormat,
    question: &str,
    aggregation: Aggregation,
    req: GenRequest,
    held: Reservation,
) -> (Reservation, Result<(Vec<Scored>, Usage)>) {
    let result = async {
        let deadline = req.deadline;
        let affinity = req.affinity;
        let request_id = req.request_id.clone();
        let out = generator.generate(req).await?;
        let mut spent = Usage {
            generations: out.samples.len() as u32,
            generator_tokens: out.samples.iter().map(|s| s.tokens as u64).sum(),
            flops: out.flops,
            cached_prompt_tokens: out.cached_prompt_tokens as u64,
            ..Default::default()
        };
        let mut scored: Vec<Scored> = out
            .samples
            .into_iter()
            .map(|s| Scored {
                answer: format.answer(&s.text),
                text: s.text,
                score: None,
            })
            .collect();
        if let Some(v) = verifier {
            let candidates: Vec<Candidate> = scored
                .iter()
                .map(|s| Candidate {
                    steps: format.steps(&s.text),
                })
                .collect();
            // An empty solution has nothing to score; it keeps score 0.
            let (idx, to_score): (Vec<usize>, Vec<Candidate>) = candidates
                .into_iter()
                .enumerate()
                .filter(|(_, c)| !c.steps.is_empty())
                .unzip();
            if !to_score.is_empty() {
                let bound: u64 = to_score
                    .iter()
                    .map(|c| v.cost().bound(question, &c.steps))
                    .sum();
                let out = v
                    .score(ScoreRequest {
                        question: question.to_string(),
                        candidates: to_score,
                        deadline,
                        affinity,
                        request_id,
                    })
                    .await?;
                if out.tokens > bound {
                    tracing::warn!(
                        tokens = out.tokens,
                        bound,
                        "verifier used more tokens than its declared bound"
                    );
                }
                spent.verifier_tokens = out.tokens;
                spent.flops += out.flops;
                for (i, steps) in idx.into_iter().zip(out.scores) {
                    scored[i].score = Some(aggregation.apply(&steps));
                }
            }
            for s in &mut scored {
                s.score.get_or_insert(0.0);
            }
        }
        Ok((scored, spent))
    }
    .await;
    (held, result)
}

/// The seed of wave `w` (SplitMix64 of the pair): waves draw independent streams.
pub fn wave_seed(seed: u64, wave: u64) -> u64 {
    let mut z = seed ^ wave.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a: a stable hash (std's is randomly keyed per process) for routing affinity.
pub fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
