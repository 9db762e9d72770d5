//! Independent samples: self-consistency, best-of-N (weighted), adaptive stopping.
//!
//! Samples are drawn in waves (one generate call each). A wave is launched only when
//! its worst-case cost fits in what the budget has left; up to [`MAX_WAVES_IN_FLIGHT`]
//! run at once so a query can use more than one generator. Waves are seeded in launch
//! order and their candidates kept in that order, so the result depends on the seed,
//! never on timing.

use super::{select, Rule, Scored, StrategyKind};
use crate::aggregate::Aggregation;
use crate::budget::{Reservation, Usage};
use crate::context::Context;
use crate::error::Result;
use crate::format::SolutionFormat;
use crate::traits::{Candidate, GenRequest, Generate, Score, ScoreRequest};
use futures::stream::{FuturesOrdered, StreamExt};
use std::time::Instant;

/// Samples per generate call.
pub const DEFAULT_WAVE_SIZE: u32 = 8;
/// Waves of one query in flight at once.
pub const MAX_WAVES_IN_FLIGHT: usize = 4;
/// A sample shortened to fit a token budget is drawn only if it can be this long.
pub const MIN_SAMPLE_TOKENS: u32 = 32;

/// When to stop before the budget is spent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// Spend the budget.
    Never,
    /// Stop when the leading answer can no longer be overtaken, or holds `share` of
    /// the vote (weight) after at least `min_answered` answered samples.
    Decisive { share: f32, min_answered: u32 },
}

/// The worst-case token cost of one sample of `t` tokens, scoring included.
pub fn sample_cost<G: Generate, S: Score>(ctx: &Context<'_, G, S>, scored: bool, t: u32) -> u64 {
    match (scored, ctx.verifier) {
        (true, Some(v)) => {
            let c = v.cost();
            ctx.question.len() as u64
                + c.prompt_overhead
                + t as u64 * (1 + ctx.generator.limits().max_token_bytes as u64 + c.step_overhead)
        }
        _ => t as u64,
    }
}

/// True when the vote is settled: the leader cannot be overtaken by the `left`
/// samples still allowed, or holds `share` of the total.
pub fn decisive(
    rule: Rule,
    candidates: &[Scored],
    left: u32,
    share: f32,
    min_answered: u32,
) -> bool {
    let Some(sel) = select(rule, candidates) else {
        return false;
    };
    let answered: u32 = sel.tallies.iter().map(|t| t.votes).sum();
    let value = |t: &super::Tally| match rule {
        Rule::Majority => t.votes as f32,
        _ => t.weight,
    };
    let first = sel.tallies.first().map_or(0.0, value);
    let second = sel.tallies.get(1).map_or(0.0, value);
    let total: f32 = sel.tallies.iter().map(value).sum();
    // Each further sample adds at most 1 (a vote, or a score in [0, 1]).
    if first - second > left as f32 {
        return true;
    }
    answered >= min_answered && total > 0.0 && first / total >= share
}

/// Draws up to `n` samples in waves of `wave` (after the `initial` candidates, which
/// count towards nothing: they were paid for already), scoring them if `rule` needs
/// it. Returns every candidate, `initial` first.
pub async fn sample<G: Generate, S: Score>(
    ctx: &mut Context<'_, G, S>,
    strategy: StrategyKind,
    n: u32,
    wave: u32,
    in_flight_max: usize,
    stop: Stop,
    initial: Vec<Scored>,
) -> Result<Vec<Scored>> {
    let rule = strategy.rule();
    let scored = rule != Rule::Majority;
    let max_new = ctx.format.max_solution_tokens;
    let per_sample = sample_cost(ctx, scored, max_new);
    let prompt = ctx.format.prompt(ctx.question);
    let mut candidates = initial;
    let mut drawn = 0u32;
    let mut in_flight = FuturesOrdered::new();
    let verifier = if scored { ctx.verifier } else { None };
    let (format, question, aggregation) = (ctx.format, ctx.question, ctx.aggregation);
    loop {
        let stopped = match stop {
            Stop::Never => false,
            Stop::Decisive {
                share,
                min_answered,
            } => decisive(rule, &candidates, n - drawn, share, min_answered),
        };
        while !stopped && in_flight.len() < in_flight_max && !ctx.ledger.expired() {
            let mut k = wave.min(n - drawn).min(ctx.ledger.generations_left());
            let mut tokens = max_new;
            let held = loop {
                if k == 0 {
                    break None;
                }
                if let Some(h) = ctx.ledger.reserve(Reservation {
                    generations: k,
                    tokens: per_sample * k as u64,
                }) {
                    break Some(h);
                }
                if k == 1 && in_flight.is_empty() {
                    // Not even one full-length sample fits: draw a shorter one if a
                    // useful length still does.
                    let fixed = sample_cost(ctx, scored, 0);
                    let per_token = sample_cost(ctx, scored, 1) - fixed;
                    let left = ctx.ledger.tokens_left().saturating_sub(fixed);
                    let t = (left / per_token).min(max_new as u64) as u32;
                    if t >= MIN_SAMPLE_TOKENS {
                        tokens = t;
                        break ctx.ledger.reserve(Reservation {
                            generations: 1,
                            tokens: sample_cost(ctx, scored, t),
                        });
                    }
                }
                k -= 1;
            };
            let Some(held) = held else { break };
            drawn += k;
            let req = ctx.gen_request(prompt.clone(), k, tokens, vec![], ctx.temperature);
            in_flight.push_back(run_wave(
                ctx.generator,
                verifier,
                format,
                question,
                aggregation,
                req,
                held,
            ));
        }
        if in_flight.is_empty() {
            break;
        }
        let waiting = Instant::now();
        let Some((held, result)) = in_flight.next().await else {
            break;
        };
        ctx.calls += waiting.elapsed();
        match result {
            Ok((new, spent)) => {
                ctx.ledger.settle(held, spent);
                candidates.extend(new);
            }
            Err(e) => {
                ctx.ledger.release(held);
                return Err(e);
            }
        }
        ctx.report(
            strategy,
            &candidates,
            format!(
                "{} candidates, {} generations used",
                candidates.len(),
                ctx.ledger.used().generations
            ),
        );
    }
    Ok(candidates)
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
        let (deadline, affinity, request_id) = (req.deadline, req.affinity, req.request_id.clone());
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
            let (idx, to_score): (Vec<usize>, Vec<Candidate>) = scored
                .iter()
                .map(|s| Candidate {
                    steps: format.steps(&s.text),
                })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn c(a: &str, s: f32) -> Scored {
        Scored {
            text: String::new(),
            answer: Some(a.into()),
            score: Some(s),
        }
    }

    #[test]
    fn decisive_votes() {
        let v = vec![c("1", 0.9), c("1", 0.9), c("1", 0.8), c("2", 0.1)];
        // Leader 2.6 vs 0.1: 4 more samples could add at most 4.
        assert!(!decisive(Rule::Weighted, &v, 4, 1.0, 4));
        assert!(decisive(Rule::Weighted, &v, 2, 1.0, 4));
        // ... but it holds 96% of the weight.
        assert!(decisive(Rule::Weighted, &v, 100, 0.75, 4));
        assert!(!decisive(Rule::Weighted, &v, 100, 0.75, 5));
        assert!(!decisive(Rule::Majority, &v, 100, 0.8, 4));
        assert!(!decisive(Rule::Majority, &[], 1, 0.8, 0));
    }
}
