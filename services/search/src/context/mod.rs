//! What one query's search carries, and the one narrow path by which a strategy
//! spends compute: three verbs, [`Context::sample`] (fresh samples),
//! [`Context::expand`] (continuations of partial solutions) and [`Context::score`]
//! (PRM rewards). Each reserves its worst case on the budget ledger, makes the calls,
//! settles what they really cost and publishes the usage; so budget accounting,
//! seeding and progress are the same for every strategy, and no strategy touches the
//! ledger itself.
//!
//! Why the ledger sits behind a mutex rather than `&mut self`: a sampling strategy
//! keeps several waves in flight, each settling its own reservation when it returns.
//! They all run in this query's task, so the lock is never contended and never held
//! across an `.await`.

mod calls;

use crate::aggregate::Aggregation;
use crate::budget::{Ledger, Reservation, Usage};
use crate::error::{Result, SearchError};
use crate::format::SolutionFormat;
use crate::grant::{Grant, GrantAsk};
use crate::models::Generators;
use crate::solve::{wave_seed, Progress, Query};
use crate::strategy::{select, Scored, StrategyKind};
use crate::traits::{GenRequest, Generate, GeneratorLimits, Sample, Score};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

pub struct Context<'a, G, S> {
    /// The models the query may run on; calls go to model `current` (the set's default
    /// until compute-optimal moves the query, [`Context::use_model`]).
    generators: &'a Generators<'a, G>,
    current: AtomicUsize,
    verifier: Option<&'a S>,
    format: &'a SolutionFormat,
    query: &'a Query,
    /// Routing hint shared by all of the query's calls (prefix-cache affinity).
    affinity: u64,
    books: Mutex<Books>,
    /// The best answer so far and the compute spent, for streaming clients and for
    /// [`crate::solve()`] if the strategy is stopped at the deadline.
    progress: watch::Sender<Progress>,
    /// One permit per generate or score call in flight: the operator's
    /// [`QueryLimits::max_calls_in_flight`], so that a wide strategy (DVTS of 4,096
    /// subtrees) queues its calls here instead of flooding the pools.
    calls: Semaphore,
    /// The span the query runs in (the orchestrator's `query`), parent of the rounds.
    query_span: tracing::Span,
}

/// The query's accounts: what the budget has left, which seed comes next, how long
/// calls have been in flight.
struct Books {
    ledger: Ledger,
    /// Calls started so far: call `i` samples with seed `wave_seed(seed, i)`.
    calls_started: u64,
    in_flight: u32,
    busy_since: Instant,
    busy: Duration,
    /// The strategy round in progress: the work between two [`Context::report`]s. Its
    /// span is the parent of the round's generate and score calls (so a trace shows
    /// the search round by round), and it ends at the report that closes the round.
    round: tracing::Span,
    rounds: u32,
    /// The grant in effect ([`crate::grant`]) and the predicted difficulty bin it was
    /// asked with, once known.
    grant: Grant,
    bin: Option<usize>,
}

fn round_span(parent: &tracing::Span, n: u32) -> tracing::Span {
    tracing::info_span!(parent: parent, "round", n, progress = tracing::field::Empty)
}

/// The best candidate so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub strategy: StrategyKind,
    pub answer: Option<String>,
    pub solution: String,
    pub score: f32,
    pub tallies: Vec<crate::strategy::Tally>,
    pub candidates: usize,
}

/// What [`Context::expand`] samples after each partial solution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuation {
    /// One more step (it stops at the step delimiter), at the query's temperature.
    NextStep,
    /// A greedy (temperature 0) rollout of up to `steps` more steps.
    Rollout { steps: u32 },
}

/// Ends a stretch of time with calls in flight when dropped (also when the search is
/// dropped mid-call at the deadline).
struct InFlight<'c>(&'c Mutex<Books>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        b.in_flight -= 1;
        if b.in_flight == 0 {
            let stretch = b.busy_since.elapsed();
            b.busy += stretch;
        }
    }
}

impl<'a, G: Generate, S: Score> Context<'a, G, S> {
    /// The context of one query: a fresh ledger, the query's seed and affinity.
    pub(crate) fn new(
        generators: &'a Generators<'a, G>,
        verifier: Option<&'a S>,
        format: &'a SolutionFormat,
        query: &'a Query,
        progress: watch::Sender<Progress>,
    ) -> Self {
        let query_span = tracing::Span::current();
        Self {
            generators,
            current: AtomicUsize::new(generators.default_index()),
            verifier,
            format,
            query,
            affinity: query.seed() ^ crate::solve::hash(query.question()),
            books: Mutex::new(Books {
                ledger: Ledger::new(*query.budget()),
                calls_started: 0,
                in_flight: 0,
                busy_since: Instant::now(),
                busy: Duration::ZERO,
                round: round_span(&query_span, 0),
                rounds: 0,
                grant: Grant::fixed(query.budget().max_generations),
                bin: None,
            }),
            progress,
            calls: Semaphore::new(query.limits().max_calls_in_flight.max(1) as usize),
            query_span,
        }
        .regranted()
    }

    fn regranted(self) -> Self {
        self.regrant(&mut self.books());
        self
    }

    /// Asks the query's allowance for its grant now (with the bin, once known) and
    /// sets it on the ledger; without an allowance the grant stays the maximum.
    fn regrant(&self, b: &mut Books) {
        let Some(allowance) = self.query.allowance() else {
            return;
        };
        let budget = self.query.budget();
        let ask = GrantAsk {
            max: budget.max_generations,
            floor: budget.min_generations,
            bin: b.bin,
            model: &self.generators.get(self.model()).id,
        };
        let mut grant = allowance.grant(&ask);
        grant.generations = b.ledger.set_granted(grant.generations);
        b.grant = grant;
    }

    /// The grant in effect: generations the query may spend in all, and why.
    pub fn grant(&self) -> Grant {
        self.books().grant
    }

    /// Records the predicted difficulty bin (0 = easiest) and asks for a grant for it:
    /// the allowance weighs what more generations buy on questions of that bin.
    pub fn set_bin(&self, bin: usize) {
        let mut b = self.books();
        b.bin = Some(bin);
        self.regrant(&mut b);
    }

    /// The span of the round in progress (see [`Books::round`]).
    fn round(&self) -> tracing::Span {
        self.books().round.clone()
    }

    pub fn format(&self) -> &'a SolutionFormat {
        self.format
    }

    pub fn question(&self) -> &'a str {
        self.query.question()
    }

    /// The query's sampling temperature.
    pub fn temperature(&self) -> f32 {
        self.query.temperature()
    }

    pub fn aggregation(&self) -> Aggregation {
        self.query.aggregation()
    }

    pub fn limits(&self) -> GeneratorLimits {
        self.generator().limits()
    }

    /// The generator the query's calls go to now.
    fn generator(&self) -> &'a G {
        self.generators.get(self.model()).generator
    }

    /// The models the query may run on.
    pub fn generators(&self) -> &'a Generators<'a, G> {
        self.generators
    }

    /// The position of the model calls go to now, in [`Context::generators`].
    pub fn model(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Sends the query's later calls to model `i` of [`Context::generators`] (what was
    /// spent stays spent; FLOPs reservations follow the new model's size).
    pub fn use_model(&self, i: usize) {
        assert!(i < self.generators.len(), "model {i} is not in the set");
        self.current.store(i, Ordering::Relaxed);
    }

    /// The query's FLOPs limit, if it has one.
    pub fn max_flops(&self) -> Option<f64> {
        self.query.budget().max_flops
    }

    /// The operator's cap on a tree strategy's rounds.
    pub fn max_rounds(&self) -> u32 {
        self.query.limits().max_rounds
    }

    pub fn used(&self) -> Usage {
        self.books().ledger.used()
    }

    /// Generations neither spent nor reserved under the grant, asked for afresh.
    pub fn generations_left(&self) -> u32 {
        let mut b = self.books();
        self.regrant(&mut b);
        b.ledger.generations_left()
    }

    /// Tokens neither spent nor reserved; `u64::MAX` without a token limit.
    pub fn tokens_left(&self) -> u64 {
        self.books().ledger.tokens_left()
    }

    /// The query's deadline has passed.
    pub fn expired(&self) -> bool {
        self.books().ledger.expired()
    }

    /// Wall time during which at least one call was in flight.
    pub fn call_time(&self) -> Duration {
        let b = self.books();
        if b.in_flight > 0 {
            b.busy + b.busy_since.elapsed()
        } else {
            b.busy
        }
    }

    /// The best candidate reported so far.
    pub fn best(&self) -> Option<Snapshot> {
        self.progress.borrow().best.clone()
    }

    /// The worst-case token cost of one sample of `t` tokens, scoring included when
    /// `scored` (and the query has a verifier): `t` generated tokens, plus a PRM
    /// prompt of the question and up to `t` steps of `max_token_bytes` each.
    pub fn sample_cost(&self, scored: bool, t: u32) -> u64 {
        match (scored, self.verifier) {
            (true, Some(v)) => {
                let c = v.cost();
                self.question().len() as u64
                    + c.prompt_overhead
                    + t as u64 * (1 + self.limits().max_token_bytes as u64 + c.step_overhead)
            }
            _ => t as u64,
        }
    }

    /// Whether [`Context::sample`] of `n` samples of up to `t` tokens after `prompt`
    /// would fit what the budget has left now (it reserves nothing).
    pub fn sample_fits(&self, prompt: &str, n: u32, t: u32, scored: bool) -> bool {
        let verifier = if scored { self.verifier } else { None };
        let want = self.sample_reservation(prompt, n, self.clamp(prompt, t), verifier);
        self.books().ledger.fits(&want)
    }

    /// The worst case of `n` samples of up to `t` tokens after `prompt`, scored by
    /// `verifier` if given: `n` generations, their tokens and FLOPs and those of scoring
    /// them.
    fn sample_reservation(
        &self,
        prompt: &str,
        n: u32,
        t: u32,
        verifier: Option<&S>,
    ) -> Reservation {
        let scoring_tokens = n as u64 * (self.sample_cost(verifier.is_some(), t) - t as u64);
        Reservation {
            generations: n,
            tokens: n as u64 * t as u64 + scoring_tokens,
            flops: self.limits().flops_bound(prompt, n, t)
                + verifier.map_or(0.0, |v| v.cost().flops(scoring_tokens)),
        }
    }

    /// Refuses a floor the FLOPs limit cannot pay for: `min_generations` full-length
    /// samples on the query's model, scored when there is a verifier, at their worst
    /// case (what the ledger would reserve for them).
    pub fn check_floor(&self) -> Result<()> {
        let budget = self.query.budget();
        let floor = budget.min_generations;
        // A floor of 1 asks nothing every query does not need (a budget too small for
        // one sample is refused where the search spends it).
        let Some(max_flops) = budget.max_flops.filter(|_| floor > 1) else {
            return Ok(());
        };
        let prompt = self.format.prompt(self.question());
        let t = self.clamp(&prompt, self.format.max_solution_tokens);
        let need = self
            .sample_reservation(&prompt, floor, t, self.verifier)
            .flops;
        if need > max_flops {
            return Err(SearchError::invalid(format!(
                "budget.min_generations ({floor}) costs up to {need:.3e} FLOPs, above budget.max_flops ({max_flops:.3e}): lower the floor or raise max_flops"
            )));
        }
        Ok(())
    }

    /// FLOPs neither spent nor reserved; infinite without a FLOPs limit.
    pub fn flops_left(&self) -> f64 {
        self.books().ledger.flops_left()
    }

    /// Charges a strategy's generation cost (the paper's unit) up front.
    pub fn charge_generations(&self, generations: u32) -> Result<()> {
        let used = {
            let mut b = self.books();
            let held = b
                .ledger
                .reserve(Reservation {
                    generations,
                    ..Default::default()
                })
                .ok_or_else(|| {
                    SearchError::invalid(format!(
                        "the strategy costs {generations} generations; budget.max_generations leaves {}",
                        b.ledger.generations_left()
                    ))
                })?;
            b.ledger.settle(
                held,
                Usage {
                    generations,
                    ..Default::default()
                },
            );
            b.ledger.used()
        };
        self.publish_usage(used);
        Ok(())
    }

    /// Verb: fresh samples of whole solutions, `n` of each `(prompt, n)`, at the
    /// query's temperature, each booked as one generation. With `scored` (and a
    /// verifier) the samples come back scored, and the reservation covers scoring
    /// them at their worst case too, so a wave is started only if it can be scored.
    ///
    /// Unlike the other verbs this one reserves when it is *called*, not when it is
    /// awaited: None (nothing reserved, no seed used) if the worst case does not fit
    /// or the deadline has passed. So a caller knows at once whether one more wave
    /// fits, and can keep several in flight.
    pub fn sample(
        &self,
        asks: Vec<(String, u32)>,
        max_tokens: u32,
        scored: bool,
    ) -> Option<impl Future<Output = Result<Vec<Vec<Scored>>>> + Send + use<'_, 'a, G, S>> {
        self.sample_at(asks, max_tokens, scored, self.query.temperature())
    }

    /// [`Context::sample`] at `temperature` instead of the query's (0: greedy).
    pub fn sample_at(
        &self,
        asks: Vec<(String, u32)>,
        max_tokens: u32,
        scored: bool,
        temperature: f32,
    ) -> Option<impl Future<Output = Result<Vec<Vec<Scored>>>> + Send + use<'_, 'a, G, S>> {
        let verifier = if scored { self.verifier } else { None };
        let asks: Vec<(String, u32, u32)> = asks
            .into_iter()
            .map(|(prompt, n)| {
                let t = self.clamp(&prompt, max_tokens);
                (prompt, n, t)
            })
            .collect();
        let want = asks
            .iter()
            .map(|(prompt, n, t)| self.sample_reservation(prompt, *n, *t, verifier))
            .fold(Reservation::default(), |a, b| Reservation {
                generations: a.generations + b.generations,
                tokens: a.tokens + b.tokens,
                flops: a.flops + b.flops,
            });
        let (held, seeds) = self.reserve(want, asks.len())?;
        let reqs: Vec<GenRequest> = asks
            .into_iter()
            .zip(seeds)
            .map(|((prompt, n, t), seed)| self.request(prompt, n, t, vec![], temperature, seed))
            .collect();
        Some(async move {
            let _in_flight = self.in_flight();
            let (mut spent, outs) = self.generate(reqs, true).await;
            let result = match outs {
                Ok(outs) => self.to_scored(outs, verifier, &mut spent).await,
                Err(e) => Err(e),
            };
            self.settle(held, spent);
            result
        })
    }

    /// Verb: continuations of partial solutions, for step-level search: `n` samples
    /// continuing each `(steps, n)`. Not booked as generations (step-level search pays
    /// its generations up front, [`Context::charge_generations`]). None (nothing
    /// spent) if the worst case does not fit or the deadline has passed.
    pub async fn expand(
        &self,
        partials: Vec<(&[String], u32)>,
        how: Continuation,
    ) -> Result<Option<Vec<Vec<Sample>>>> {
        if partials.is_empty() {
            return Ok(Some(vec![]));
        }
        let (temperature, stop, max_tokens) = match how {
            Continuation::NextStep => (
                self.query.temperature(),
                vec![self.format.step_delimiter.clone()],
                self.format.step_tokens(),
            ),
            Continuation::Rollout { steps } => (
                0.0,
                vec![],
                steps
                    .saturating_mul(self.format.step_tokens())
                    .min(self.format.max_solution_tokens),
            ),
        };
        let asks: Vec<(String, u32, u32)> = partials
            .iter()
            .map(|&(steps, n)| {
                let prompt = self.partial_prompt(steps);
                let t = self.clamp(&prompt, max_tokens);
                (prompt, n, t)
            })
            .collect();
        let limits = self.limits();
        let want = Reservation {
            generations: 0,
            tokens: asks.iter().map(|&(_, n, t)| n as u64 * t as u64).sum(),
            flops: asks
                .iter()
                .map(|(prompt, n, t)| limits.flops_bound(prompt, *n, *t))
                .sum(),
        };
        let Some((held, seeds)) = self.reserve(want, asks.len()) else {
            return Ok(None);
        };
        let reqs = asks
            .into_iter()
            .zip(seeds)
            .map(|((prompt, n, t), seed)| {
                self.request(prompt, n, t, stop.clone(), temperature, seed)
            })
            .collect();
        let _in_flight = self.in_flight();
        let (spent, outs) = self.generate(reqs, false).await;
        self.settle(held, spent);
        Ok(Some(outs?.into_iter().map(|o| o.samples).collect()))
    }

    /// Verb: PRM rewards, one per step, for each candidate's steps (`[]` for a
    /// candidate without steps, which costs nothing). Reserves the exact token bound
    /// first; None (nothing spent) if it does not fit or the deadline has passed.
    /// Fails if the query has no verifier.
    pub async fn score(&self, candidates: Vec<Vec<String>>) -> Result<Option<Vec<Vec<f32>>>> {
        let verifier = self
            .verifier
            .ok_or_else(|| SearchError::Unavailable("this strategy needs a verifier".into()))?;
        if candidates.iter().all(|c| c.is_empty()) {
            return Ok(Some(vec![Vec::new(); candidates.len()]));
        }
        let cost = verifier.cost();
        let bound = candidates
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| cost.bound(self.question(), c))
            .sum();
        let Some((held, _)) = self.reserve(
            Reservation {
                generations: 0,
                tokens: bound,
                flops: cost.flops(bound),
            },
            0,
        ) else {
            return Ok(None);
        };
        let _in_flight = self.in_flight();
        let (spent, rewards) = self.call_verifier(verifier, &candidates).await;
        self.settle(held, spent);
        rewards.map(Some)
    }

    /// Records the best answer so far under `strategy`'s selection rule, with the
    /// compute spent, and wakes whoever watches the progress (a streaming client).
    /// The verbs keep the usage current without waking anyone, so a stream gets one
    /// event per new set of candidates.
    pub fn report(&self, strategy: StrategyKind, candidates: &[Scored], message: String) {
        let best = select(strategy.rule(), candidates).map(|b| Snapshot {
            strategy,
            solution: candidates[b.winner].text.clone(),
            answer: b.answer,
            score: b.score,
            tallies: b.tallies,
            candidates: candidates.len(),
        });
        let usage = self.used();
        {
            let mut books = self.books();
            books.round.record("progress", message.as_str());
            books.rounds += 1;
            books.round = round_span(&self.query_span, books.rounds);
        }
        self.progress.send_modify(|p| {
            p.usage = usage;
            p.message = message;
            if best.is_some() {
                p.best = best;
            }
        });
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        // Nothing panics while holding the lock; if something did, the books are
        // still consistent (each update is a few additions).
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `want` and takes the seeds of `calls` calls, or None (nothing
    /// reserved, no seed taken) if the deadline has passed or `want` does not fit.
    fn reserve(&self, want: Reservation, calls: usize) -> Option<(Reservation, Vec<u64>)> {
        let mut b = self.books();
        if b.ledger.expired() {
            return None;
        }
        self.regrant(&mut b);
        let held = b.ledger.reserve(want)?;
        let first = b.calls_started;
        b.calls_started += calls as u64;
        let seed = self.query.seed();
        Some((
            held,
            (first..b.calls_started)
                .map(|i| wave_seed(seed, i))
                .collect(),
        ))
    }

    /// Books what a reservation's calls really cost and publishes the new usage.
    fn settle(&self, held: Reservation, spent: Usage) {
        let used = {
            let mut b = self.books();
            b.ledger.settle(held, spent);
            b.ledger.used()
        };
        self.publish_usage(used);
    }

    fn publish_usage(&self, used: Usage) {
        self.progress.send_if_modified(|p| {
            p.usage = used;
            false
        });
    }

    fn in_flight(&self) -> InFlight<'_> {
        let mut b = self.books();
        if b.in_flight == 0 {
            b.busy_since = Instant::now();
        }
        b.in_flight += 1;
        InFlight(&self.books)
    }
}
