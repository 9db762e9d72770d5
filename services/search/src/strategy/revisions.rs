//! Sequential revisions (Snell et al. §6): the generator, shown its earlier attempts,
//! writes a new one. N attempts are split into `chains` parallel chains of about
//! N / chains sequential attempts; every attempt is scored and the final answer is
//! picked across all of them.

use super::{Scored, StrategyKind};
use crate::context::Context;
use crate::error::Result;
use crate::traits::{Generate, Score};

/// Earlier attempts shown to the model (the paper conditions on the last four).
pub const CONTEXT_ATTEMPTS: usize = 4;

/// Chains for a budget of `n` attempts when the request leaves it open: about sqrt(n).
pub fn default_chains(n: u32) -> u32 {
    ((n as f64).sqrt().round() as u32).clamp(1, n.max(1))
}

pub async fn revisions<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    strategy: StrategyKind,
    n: u32,
    chains: u32,
) -> Result<Vec<Scored>> {
    let chains = if chains == 0 {
        default_chains(n)
    } else {
        chains.min(n)
    }
    .max(1);
    let (format, question) = (ctx.format(), ctx.question());
    let max_new = format.max_solution_tokens;
    let scored = strategy.rule() != super::Rule::Majority;
    let mut history: Vec<Vec<String>> = vec![Vec::new(); chains as usize];
    let mut all: Vec<Scored> = Vec::new();
    let mut left = n;
    let mut round = 0;
    while left > 0 {
        let active = (chains.min(left)) as usize;
        let asks: Vec<(String, u32)> = history[..active]
            .iter()
            .map(|earlier| {
                // The last few attempts, fewer if they would crowd out a full answer.
                let limits = ctx.limits();
                let mut from = earlier.len().saturating_sub(CONTEXT_ATTEMPTS);
                let prompt = loop {
                    let p = if from == earlier.len() {
                        format.prompt(question)
                    } else {
                        format.revision_prompt(question, &earlier[from..])
                    };
                    if from == earlier.len() || limits.room_after(&p) >= max_new {
                        break p;
                    }
                    from += 1;
                };
                (prompt, 1)
            })
            .collect();
        // Scored below, with a reservation of its own: an attempt is drawn even when
        // the budget cannot score it.
        let Some(attempts) = ctx.sample(asks, max_new, false) else {
            break;
        };
        let texts: Vec<String> = attempts
            .await?
            .into_iter()
            .map(|a| a.into_iter().next().map(|s| s.text).unwrap_or_default())
            .collect();
        let scores = if scored {
            match ctx
                .score(texts.iter().map(|t| format.steps(t)).collect())
                .await?
            {
                Some(s) => s
                    .into_iter()
                    .map(|s| Some(ctx.aggregation().apply(&s)))
                    .collect(),
                None => vec![Some(0.0); texts.len()],
            }
        } else {
            vec![None; texts.len()]
        };
        for (c, (text, score)) in texts.into_iter().zip(scores).enumerate() {
            all.push(Scored {
                answer: format.answer(&text),
                text: text.clone(),
                score,
            });
            history[c].push(text);
        }
        left -= active as u32;
        ctx.report(
            strategy,
            &all,
            format!("revision round {round}: {} attempts", all.len()),
        );
        round += 1;
    }
    Ok(all)
}
