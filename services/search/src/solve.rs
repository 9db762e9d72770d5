//! One query: validate, run the strategy under the budget, pick the answer, report.

use crate::aggregate::Aggregation;
use crate::budget::{Budget, Ledger, Usage};
use crate::context::Context;
use crate::error::{Result, SearchError};
use crate::format::SolutionFormat;
use crate::strategy::compute_optimal::{compute_optimal, Decision, Policy};
use crate::strategy::{run, select, StrategyKind, Tally};
use crate::traits::{Generate, Score};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const DEFAULT_TEMPERATURE: f32 = 0.8;

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
    /// Carried to every generate/score call.
    pub request_id: String,
    /// The compute-optimal policy (None: [`Policy::default`]).
    pub policy: Option<Arc<Policy>>,
    /// At the deadline, fail with `DeadlineExceeded` instead of returning the best
    /// answer found so far (flagged [`Outcome::partial`]).
    pub strict: bool,
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
            request_id: String::new(),
            policy: None,
            strict: false,
        }
    }
}

/// The best answer so far, sent as compute is spent.
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
    /// The strategy that produced the candidates (for compute-optimal: the one it chose).
    pub strategy: StrategyKind,
    /// Set when compute-optimal routed the query.
    pub decision: Option<Decision>,
    pub usage: Usage,
    pub tallies: Vec<Tally>,
    pub candidates: usize,
    /// Wall time of the whole search.
    pub elapsed: Duration,
    /// Wall time during which at least one generate/score call was in flight.
    pub calls: Duration,
    /// The deadline stopped the search before its budget was spent: this is the best
    /// answer found by then.
    pub partial: bool,
}

/// Answers `params.question` with `generator` (and `verifier`, when the strategy needs
/// one), never spending past `params.budget`; sends [`Progress`] to `progress` as
/// compute is spent.
pub async fn solve<G: Generate, S: Score>(
    generator: &G,
    verifier: Option<&S>,
    format: &SolutionFormat,
    params: SolveParams,
    progress: Option<mpsc::UnboundedSender<Progress>>,
) -> Result<Outcome> {
    let started = Instant::now();
    format.check_question(&params.question)?;
    let temperature = params.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    if !(temperature > 0.0 && temperature <= 2.0) {
        return Err(SearchError::invalid(format!(
            "temperature must be in (0, 2], got {temperature}"
        )));
    }
    let strategy = params
        .strategy
        .unwrap_or_else(|| StrategyKind::best_available(verifier.is_some()));
    strategy.validate()?;
    if strategy.needs_verifier() && verifier.is_none() {
        return Err(SearchError::Unavailable(format!(
            "strategy {} needs a verifier and none is available",
            strategy.name()
        )));
    }
    let mut ctx = query_context(generator, verifier, format, &params, temperature, progress);
    let best = ctx.best.subscribe();
    let n = params.budget.max_generations;
    let search = async {
        if strategy == StrategyKind::ComputeOptimal {
            let default_policy;
            let policy = match &params.policy {
                Some(p) => p.as_ref(),
                None => {
                    default_policy = Policy::default();
                    &default_policy
                }
            };
            let (c, d) = compute_optimal(&mut ctx, policy).await?;
            Ok::<_, SearchError>((c, d.chosen, Some(d)))
        } else {
            Ok((run(&mut ctx, strategy, n, vec![]).await?, strategy, None))
        }
    };
    let finished = match params.budget.deadline {
        Some(deadline) => {
            tokio::time::timeout_at(soft_deadline(started, deadline).into(), search).await
        }
        None => Ok(search.await),
    };
    let (candidates, used, decision) = match finished {
        Ok(Ok(done)) => done,
        // A call that hit the deadline ends the search like the soft deadline does.
        Ok(Err(SearchError::DeadlineExceeded(_))) | Err(_) => {
            let snapshot = best.borrow().clone();
            return match snapshot {
                Some(b) if !params.strict => Ok(Outcome {
                    answer: b.answer,
                    solution: b.solution,
                    score: b.score,
                    strategy: b.strategy,
                    decision: None,
                    usage: ctx.ledger.used(),
                    tallies: b.tallies,
                    candidates: b.candidates,
                    elapsed: started.elapsed(),
                    calls: ctx.calls,
                    partial: true,
                }),
                _ => Err(SearchError::DeadlineExceeded(format!(
                    "the deadline passed after {:.3} s{}",
                    started.elapsed().as_secs_f64(),
                    if params.strict {
                        " (strict: no partial answer)"
                    } else {
                        " before any candidate finished"
                    }
                ))),
            };
        }
        Ok(Err(e)) => return Err(e),
    };
    let partial = ctx.ledger.expired();
    if partial && params.strict {
        return Err(SearchError::DeadlineExceeded(
            "the deadline passed before the budget was spent (strict: no partial answer)".into(),
        ));
    }
    let Some(pick) = select(used.rule(), &candidates) else {
        return Err(if ctx.ledger.expired() {
            SearchError::DeadlineExceeded("no candidate finished before the deadline".into())
        } else {
            SearchError::invalid(format!(
                "budget.max_tokens is too small for one solution of up to {} tokens and its scoring",
                format.max_solution_tokens
            ))
        });
    };
    Ok(Outcome {
        answer: pick.answer,
        solution: candidates[pick.winner].text.clone(),
        score: pick.score,
        strategy: used,
        decision,
        usage: ctx.ledger.used(),
        tallies: pick.tallies,
        candidates: candidates.len(),
        elapsed: started.elapsed(),
        calls: ctx.calls,
        partial,
    })
}

/// When the search stops to answer with what it has: a margin before the client's
/// deadline (a tenth of the time allowed, 20..=500 ms) leaves time to send the answer.
pub fn soft_deadline(started: Instant, deadline: Instant) -> Instant {
    let allowed = deadline.saturating_duration_since(started);
    let margin = (allowed / 10).clamp(Duration::from_millis(20), Duration::from_millis(500));
    deadline
        .checked_sub(margin)
        .unwrap_or(deadline)
        .max(started)
}

/// The context of one query: a fresh ledger, the query's seed and affinity.
fn query_context<'a, G: Generate, S: Score>(
    generator: &'a G,
    verifier: Option<&'a S>,
    format: &'a SolutionFormat,
    params: &'a SolveParams,
    temperature: f32,
    progress: Option<mpsc::UnboundedSender<Progress>>,
) -> Context<'a, G, S> {
    Context {
        generator,
        verifier,
        format,
        question: &params.question,
        ledger: Ledger::new(params.budget),
        seed: params.seed,
        temperature,
        aggregation: params.aggregation,
        affinity: params.seed ^ hash(&params.question),
        request_id: params.request_id.clone(),
        progress,
        calls: Duration::ZERO,
        call_index: 0,
        best: tokio::sync::watch::channel(None).0,
    }
}

/// `n` scored samples drawn exactly as a best-of-N query with `params` draws its
/// first `n` (the same waves, seeds and order), for offline evaluation: a sampling
/// strategy's result at any budget <= `n` can then be replayed from a prefix of one
/// draw (see [`crate::replay`]) instead of being sampled again.
pub async fn draw<G: Generate, S: Score>(
    generator: &G,
    verifier: &S,
    format: &SolutionFormat,
    params: &SolveParams,
    n: u32,
) -> Result<(Vec<crate::strategy::Scored>, Usage)> {
    use crate::strategy::sampling::{sample, Stop, DEFAULT_WAVE_SIZE, MAX_WAVES_IN_FLIGHT};
    format.check_question(&params.question)?;
    let temperature = params.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    let mut ctx = query_context(generator, Some(verifier), format, params, temperature, None);
    let candidates = sample(
        &mut ctx,
        StrategyKind::WeightedBestOfN,
        n,
        DEFAULT_WAVE_SIZE,
        MAX_WAVES_IN_FLIGHT,
        Stop::Never,
        vec![],
    )
    .await?;
    Ok((candidates, ctx.ledger.used()))
}

/// The seed of call `i` of a query (SplitMix64 of the pair): calls draw independent
/// streams, deterministically in call order.
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
