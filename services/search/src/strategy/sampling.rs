//! Independent samples: self-consistency, best-of-N (weighted), adaptive stopping.
//!
//! Samples are drawn in waves (one generate call each). A wave is launched only when
//! its worst-case cost fits in what the budget has left; up to [`MAX_WAVES_IN_FLIGHT`]
//! run at once so a query can use more than one generator. Waves are seeded in launch
//! order and their candidates kept in that order, so the result depends on the seed,
//! never on timing.

use super::{select, Rule, Scored, StrategyKind};
use crate::context::Context;
use crate::error::Result;
use crate::traits::{Generate, Score};
use futures::stream::{FuturesOrdered, StreamExt};
use std::future::Future;

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
    /// Stop when the leading answer can no longer be overtaken, or its votes (its
    /// summed scores, when weighted) reach `share` of the answered samples, after at
    /// least `min_answered` of them.
    Decisive { share: f32, min_answered: u32 },
}

/// True when the vote is settled: the leader cannot be overtaken by the `left`
/// samples still allowed, or its value reaches `share` of the answered samples.
///
/// Why answered samples and not the total weight: a share of the total weight says
/// only that the samples agree. When the verifier doubts every one of them (all scores
/// near 0), the leader can hold most of a tiny total; that is exactly the question
/// where more samples help. Against the answered count (each sample adds at most 1),
/// the leader must be both agreed on and trusted. Under majority the two are the same.
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
    // Each further sample adds at most 1 (a vote, or a score in [0, 1]).
    if first - second > left as f32 {
        return true;
    }
    answered >= min_answered && answered > 0 && first / answered as f32 >= share
}

/// Draws up to `n` samples in waves of `wave` (after the `initial` candidates, which
/// count towards nothing: they were paid for already), scoring them if `rule` needs
/// it. Returns every candidate, `initial` first.
pub async fn sample<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    strategy: StrategyKind,
    n: u32,
    wave: u32,
    in_flight_max: usize,
    stop: Stop,
    initial: Vec<Scored>,
) -> Result<Vec<Scored>> {
    let rule = strategy.rule();
    let scored = rule != Rule::Majority;
    let temperature = match strategy {
        StrategyKind::Greedy => 0.0,
        _ => ctx.temperature(),
    };
    let prompt = ctx.format().prompt(ctx.question());
    let mut candidates = initial;
    let mut drawn = 0u32;
    let mut in_flight = FuturesOrdered::new();
    // An adaptive grant raised while the query runs (load fell) raises the target by
    // as much; a lowered one stops new waves through the ledger. A fixed budget's
    // grant never moves.
    let granted_at_start = ctx.grant().generations;
    loop {
        let target = n.saturating_add(ctx.grant().generations.saturating_sub(granted_at_start));
        let stopped = match stop {
            Stop::Never => false,
            Stop::Decisive {
                share,
                min_answered,
            } => decisive(
                rule,
                &candidates,
                target.saturating_sub(drawn).min(ctx.generations_left()),
                share,
                min_answered,
            ),
        };
        while !stopped && in_flight.len() < in_flight_max {
            let most = wave.min(target.saturating_sub(drawn));
            let Some((k, next)) = launch(
                ctx,
                &prompt,
                most,
                scored,
                temperature,
                in_flight.is_empty(),
            ) else {
                break;
            };
            drawn += k;
            in_flight.push_back(next);
        }
        let Some(result) = in_flight.next().await else {
            break;
        };
        candidates.extend(result?.into_iter().flatten());
        ctx.report(
            strategy,
            &candidates,
            format!(
                "{} candidates, {} generations used",
                candidates.len(),
                ctx.used().generations
            ),
        );
    }
    Ok(candidates)
}

/// Starts the largest wave of at most `most` samples whose worst case fits the
/// budget. When not even one full-length sample fits and nothing else is in flight
/// (`alone`), starts one shorter sample if a useful length still fits. Returns the
/// wave's size and its call, or None if nothing fits.
fn launch<'c, 'a, G: Generate, S: Score>(
    ctx: &'c Context<'a, G, S>,
    prompt: &str,
    most: u32,
    scored: bool,
    temperature: f32,
    alone: bool,
) -> Option<(
    u32,
    impl Future<Output = Result<Vec<Vec<Scored>>>> + use<'c, 'a, G, S>,
)> {
    let max_new = ctx.format().max_solution_tokens;
    let most = most.min(ctx.generations_left());
    for k in (1..=most).rev() {
        if let Some(call) =
            ctx.sample_at(vec![(prompt.to_string(), k)], max_new, scored, temperature)
        {
            return Some((k, call));
        }
    }
    if most == 0 || !alone {
        return None;
    }
    // The longest sample that fits every limit left (a sample's cost grows with its
    // length in tokens and in FLOPs alike, so the lengths that fit are a prefix).
    let (mut lo, mut hi) = (MIN_SAMPLE_TOKENS, max_new);
    if hi < lo || !ctx.sample_fits(prompt, 1, lo, scored) {
        return None;
    }
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if ctx.sample_fits(prompt, 1, mid, scored) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let call = ctx.sample_at(vec![(prompt.to_string(), 1)], lo, scored, temperature)?;
    Some((1, call))
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
        // Its weight is 2.6 of the 4 the answered samples could give: 65%.
        assert!(!decisive(Rule::Weighted, &v, 100, 0.75, 4));
        assert!(decisive(Rule::Weighted, &v, 100, 0.6, 4));
        assert!(!decisive(Rule::Weighted, &v, 100, 0.6, 5));
        // Agreement the verifier doubts does not stop: 96% of a tiny total weight.
        let doubted = vec![c("1", 0.02), c("1", 0.02), c("1", 0.02), c("2", 0.001)];
        assert!(!decisive(Rule::Weighted, &doubted, 100, 0.75, 4));
        assert!(!decisive(Rule::Majority, &v, 100, 0.8, 4));
        assert!(!decisive(Rule::Majority, &[], 1, 0.8, 0));
    }
}
