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
    ctx: &mut Context<'_, G, S>,
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
    let max_new = ctx.format.max_solution_tokens;
    let scored = strategy.rule() != super::Rule::Majority;
    let mut history: Vec<Vec<String>> = vec![Vec::new(); chains as usize];
    let mut all: Vec<Scored> = Vec::new();
    let mut left = n;
    let mut round = 0;
    while left > 0 {
        let active = (chains.min(left)) as usize;
        let reqs: Vec<_> = (0..active)
            .map(|c| {
                let earlier = &history[c];
                // The last few attempts, fewer if they would crowd out a full answer.
                let limits = ctx.generator.limits();
                let mut from = earlier.len().saturating_sub(CONTEXT_ATTEMPTS);
                let prompt = loop {
                    let p = if from == earlier.len() {
                        ctx.format.prompt(ctx.question)
                    } else {
                        ctx.format.revision_prompt(ctx.question, &earlier[from..])
                    };
                    if from == earlier.len() || limits.room_after(&p) >= max_new {
                        break p;
                    }
                    from += 1;
                };
                ctx.gen_request(prompt, 1, max_new, vec![], ctx.temperature)
            })
            .collect();
        let Some(outs) = ctx.generate_all(reqs, true).await? else {
            break;
        };
        let texts: Vec<String> = outs
            .into_iter()
            .map(|o| {
                o.samples
                    .into_iter()
                    .next()
                    .map(|s| s.text)
                    .unwrap_or_default()
            })
            .collect();
        let scores = if scored {
            match ctx
                .score_all(texts.iter().map(|t| ctx.format.steps(t)).collect())
                .await?
            {
                Some(s) => s
                    .into_iter()
                    .map(|s| Some(ctx.aggregation.apply(&s)))
                    .collect(),
                None => vec![Some(0.0); texts.len()],
            }
        } else {
            vec![None; texts.len()]
        };
        for (c, (text, score)) in texts.into_iter().zip(scores).enumerate() {
            all.push(Scored {
                answer: ctx.format.answer(&text),
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
