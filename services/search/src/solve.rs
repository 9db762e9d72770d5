//! One query: validate it (once, into a [`Query`]), run the strategy under the budget,
//! pick the answer, report.

use crate::aggregate::Aggregation;
use crate::budget::{Budget, Usage};
use crate::context::{Context, Snapshot};
use crate::error::{Result, SearchError};
use crate::format::SolutionFormat;
use crate::grant::{Allowance, BudgetMode, GrantReason};
use crate::limits::QueryLimits;
use crate::models::Generators;
use crate::strategy::compute_optimal::{compute_optimal, Decision, Policy};
use crate::strategy::{run, select, StrategyKind, Tally};
use crate::traits::{Generate, Score};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

pub const DEFAULT_TEMPERATURE: f32 = 0.8;

/// What a caller asks for, as it arrives (from the wire or from code). Nothing here
/// is trusted until [`SolveParams::validate`] turns it into a [`Query`].
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
    /// The compute-optimal policy (None: [`Policy::builtin`]).
    pub policy: Option<Arc<Policy>>,
    /// At the deadline, fail with `DeadlineExceeded` instead of returning the best
    /// answer found so far (flagged [`Outcome::partial`]).
    pub strict: bool,
    /// The operator's caps (default: the API's own bounds, no time cap).
    pub limits: QueryLimits,
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
            limits: QueryLimits::default(),
        }
    }

    /// The one check of a request: the question fits `format`, the temperature and
    /// the strategy's parameters are in range, nothing is above the operator's caps
    /// (which also set the deadline, [`QueryLimits::apply`]). Messages say what to send
    /// instead.
    pub fn validate(mut self, format: &SolutionFormat) -> Result<Query> {
        format.check_question(&self.question)?;
        let temperature = self.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !(temperature > 0.0 && temperature <= 2.0) {
            return Err(SearchError::invalid(format!(
                "temperature must be in (0, 2] (leave it unset, 0 on the wire, for the default); got {temperature}"
            )));
        }
        if let Some(s) = self.strategy {
            s.validate()
                .map_err(|e| SearchError::invalid(format!("strategy.{e}")))?;
        }
        self.limits.apply(&mut self.budget, Instant::now())?;
        Ok(Query {
            question: self.question,
            strategy: self.strategy,
            budget: self.budget,
            seed: self.seed,
            temperature,
            aggregation: self.aggregation,
            request_id: self.request_id,
            policy: self.policy.unwrap_or_else(Policy::builtin),
            strict: self.strict,
            limits: self.limits,
            client_calls: None,
            tenant: 0,
            allowance: None,
        })
    }
}

/// A request that passed [`SolveParams::validate`] for a format: its question fits,
/// its temperature is set and in range, its strategy's parameters are in range. Its
/// fields are private, so nothing else makes one, and code past the edge trusts it.
#[derive(Debug, Clone)]
pub struct Query {
    question: String,
    strategy: Option<StrategyKind>,
    budget: Budget,
    seed: u64,
    temperature: f32,
    aggregation: Aggregation,
    request_id: String,
    policy: Arc<Policy>,
    strict: bool,
    limits: QueryLimits,
    client_calls: Option<Arc<Semaphore>>,
    tenant: u64,
    /// Sets the grant of an adaptive budget; None: fixed (the maximum).
    allowance: Option<Arc<dyn Allowance>>,
}

impl Query {
    pub fn question(&self) -> &str {
        &self.question
    }

    /// None: the best available strategy (decided when the query runs, by whether
    /// there is a verifier).
    pub fn strategy(&self) -> Option<StrategyKind> {
        self.strategy
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    pub fn aggregation(&self) -> Aggregation {
        self.aggregation
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn strict(&self) -> bool {
        self.strict
    }

    /// The operator's caps it was accepted under.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// Call permits shared with its client's other queries, if any.
    pub fn client_calls(&self) -> Option<&Arc<Semaphore>> {
        self.client_calls.as_ref()
    }

    /// Whose query this is (0: nobody in particular), carried on its calls so that
    /// workers take clients in turn.
    pub fn tenant(&self) -> u64 {
        self.tenant
    }

    /// The allowance that grants an adaptive budget, if the query has one.
    pub fn allowance(&self) -> Option<&dyn Allowance> {
        self.allowance.as_deref()
    }

    /// FIXED without an allowance, ADAPTIVE with one.
    pub fn budget_mode(&self) -> BudgetMode {
        if self.allowance.is_some() {
            BudgetMode::Adaptive
        } else {
            BudgetMode::Fixed
        }
    }

    /// Makes the budget adaptive: `allowance` grants it, between the budget's floor and
    /// maximum, whenever the search asks ([`crate::grant`]).
    pub fn with_allowance(mut self, allowance: Arc<dyn Allowance>) -> Self {
        self.allowance = Some(allowance);
        self
    }

    pub fn with_tenant(mut self, tenant: u64) -> Self {
        self.tenant = tenant;
        self
    }

    /// Shares `permits` with the client's other queries: every generate or score call
    /// then holds one of them besides one of the query's own (the orchestrator's
    /// per-client call cap).
    pub fn with_client_calls(mut self, permits: Option<Arc<Semaphore>>) -> Self {
        self.client_calls = permits;
        self
    }
}

/// How a query is doing: the best answer so far and the compute spent. Published
/// through one `watch` channel as compute is spent (see [`solve_query`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// The best candidate so far under the strategy's selection rule.
    pub best: Option<Snapshot>,
    pub usage: Usage,
    /// What the strategy is doing, for people.
    pub message: String,
}

impl Progress {
    pub fn best_answer(&self) -> Option<&str> {
        self.best.as_ref().and_then(|b| b.answer.as_deref())
    }

    /// The best candidate's score (0 before there is one).
    pub fn best_score(&self) -> f32 {
        self.best.as_ref().map_or(0.0, |b| b.score)
    }
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
    /// The generator model the answer's candidates came from (its id in the query's
    /// [`Generators`]).
    pub model_id: String,
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
    /// The generations granted when the search ended, and why ([`crate::grant`]).
    pub granted: u32,
    pub grant_reason: GrantReason,
    pub budget_mode: BudgetMode,
}

/// Validates `params` and answers it on one generator: [`SolveParams::validate`] then
/// [`solve_query`].
pub async fn solve<G: Generate, S: Score>(
    generator: &G,
    verifier: Option<&S>,
    format: &SolutionFormat,
    params: SolveParams,
    progress: Option<watch::Sender<Progress>>,
) -> Result<Outcome> {
    solve_on(
        &Generators::one("", generator),
        verifier,
        format,
        params,
        progress,
    )
    .await
}

/// [`solve`] over a set of generator models ([`solve_query_on`]).
pub async fn solve_on<G: Generate, S: Score>(
    generators: &Generators<'_, G>,
    verifier: Option<&S>,
    format: &SolutionFormat,
    params: SolveParams,
    progress: Option<watch::Sender<Progress>>,
) -> Result<Outcome> {
    let query = params.validate(format)?;
    solve_query_on(generators, verifier, format, &query, progress).await
}

/// Answers `query` (validated for `format`) with `generator` (and `verifier`, when
/// the strategy needs one), never spending past its budget; publishes [`Progress`]
/// on `progress` as compute is spent.
pub async fn solve_query<G: Generate, S: Score>(
    generator: &G,
    verifier: Option<&S>,
    format: &SolutionFormat,
    query: &Query,
    progress: Option<watch::Sender<Progress>>,
) -> Result<Outcome> {
    solve_query_on(
        &Generators::one("", generator),
        verifier,
        format,
        query,
        progress,
    )
    .await
}

/// [`solve_query`] over a set of generator models: compute-optimal probes on the
/// cheapest and may run on any ([`compute_optimal`]); every other strategy runs on
/// the set's default.
pub async fn solve_query_on<G: Generate, S: Score>(
    generators: &Generators<'_, G>,
    verifier: Option<&S>,
    format: &SolutionFormat,
    query: &Query,
    progress: Option<watch::Sender<Progress>>,
) -> Result<Outcome> {
    let started = Instant::now();
    let strategy = query
        .strategy
        .unwrap_or_else(|| StrategyKind::best_available(verifier.is_some()));
    if strategy.needs_verifier() && verifier.is_none() {
        return Err(SearchError::Unavailable(format!(
            "strategy {} needs a verifier and none is available",
            strategy.name()
        )));
    }
    let progress = progress.unwrap_or_else(|| watch::channel(Progress::default()).0);
    let ctx = Context::new(generators, verifier, format, query, progress);
    ctx.check_floor()?;
    let n = ctx.grant().generations;
    let search = async {
        if strategy == StrategyKind::ComputeOptimal {
            let (c, d) = compute_optimal(&ctx, query.policy()).await?;
            Ok::<_, SearchError>((c, d.chosen, Some(d)))
        } else {
            Ok((run(&ctx, strategy, n, vec![]).await?, strategy, None))
        }
    };
    let finished = match query.budget.deadline {
        Some(deadline) => {
            tokio::time::timeout_at(soft_deadline(started, deadline).into(), search).await
        }
        None => Ok(search.await),
    };
    // The grant the search ended under (it no longer changes: the search is over).
    let grant = ctx.grant();
    let (candidates, used, decision) = match finished {
        Ok(Ok(done)) => done,
        // A call that hit the deadline ends the search like the soft deadline does.
        Ok(Err(SearchError::DeadlineExceeded(_))) | Err(_) => {
            return match ctx.best() {
                Some(b) if !query.strict => Ok(Outcome {
                    answer: b.answer,
                    solution: b.solution,
                    score: b.score,
                    strategy: b.strategy,
                    decision: None,
                    model_id: generators.get(ctx.model()).id.clone(),
                    usage: ctx.used(),
                    tallies: b.tallies,
                    candidates: b.candidates,
                    elapsed: started.elapsed(),
                    calls: ctx.call_time(),
                    partial: true,
                    granted: grant.generations,
                    grant_reason: grant.reason,
                    budget_mode: query.budget_mode(),
                }),
                _ => Err(SearchError::DeadlineExceeded(format!(
                    "the deadline passed after {:.3} s{}",
                    started.elapsed().as_secs_f64(),
                    if query.strict {
                        " (strict: no partial answer)"
                    } else {
                        " before any candidate finished"
                    }
                ))),
            };
        }
        Ok(Err(e)) => return Err(e),
    };
    let partial = ctx.expired();
    if partial && query.strict {
        return Err(SearchError::DeadlineExceeded(
            "the deadline passed before the budget was spent (strict: no partial answer)".into(),
        ));
    }
    let Some(pick) = select(used.rule(), &candidates) else {
        return Err(if ctx.expired() {
            SearchError::DeadlineExceeded("no candidate finished before the deadline".into())
        } else {
            SearchError::invalid(format!(
                "budget.max_tokens or budget.max_flops is too small for one solution of up to {} tokens and its scoring",
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
        model_id: generators.get(ctx.model()).id.clone(),
        usage: ctx.used(),
        tallies: pick.tallies,
        candidates: candidates.len(),
        elapsed: started.elapsed(),
        calls: ctx.call_time(),
        partial,
        granted: grant.generations,
        grant_reason: grant.reason,
        budget_mode: query.budget_mode(),
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
    let query = params.clone().validate(format)?;
    let progress = watch::channel(Progress::default()).0;
    let generators = Generators::one("", generator);
    let ctx = Context::new(&generators, Some(verifier), format, &query, progress);
    let candidates = sample(
        &ctx,
        StrategyKind::WeightedBestOfN,
        n,
        DEFAULT_WAVE_SIZE,
        MAX_WAVES_IN_FLIGHT,
        Stop::Never,
        vec![],
    )
    .await?;
    Ok((candidates, ctx.used()))
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
