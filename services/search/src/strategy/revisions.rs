//! Sequential revisions (Snell et al. §6): N attempts are split into `chains` parallel
//! chains of about N / chains sequential attempts, each a revision of the chain's last;
//! the final answer is picked across all of them.
//!
//! Why revisions are guided by the verifier: shown a whole wrong attempt, the bundled
//! models copy it, and their revisions were right less often than a fresh sample
//! (docs/results.md). So with a verifier a revision keeps the attempt's steps before the
//! one the verifier doubts most, has the model propose [`PROPOSALS`] next steps there,
//! keeps the one the verifier scores best that is not the doubted step again, and lets
//! the model finish. Every attempt is scored. Without a verifier (the majority rule)
//! nothing locates the error, and the model is shown the chain's last few attempts
//! instead.

use super::{Scored, StrategyKind};
use crate::context::{Context, Continuation};
use crate::error::Result;
use crate::traits::{Generate, Score};

/// Earlier attempts shown to the model (the paper conditions on the last four).
pub const CONTEXT_ATTEMPTS: usize = 4;

/// The step a scored attempt most likely went wrong at: the one whose score fell most
/// relative to the score before it (1 before the first step), the earliest on ties.
/// None for an attempt without steps.
///
/// Why a ratio and not a threshold: for a verifier whose step score is a running
/// product (the bundled likelihood readout) the ratio is the step's own reading, and for
/// a PRM that scores "every step so far is right" it is the step's probability given a
/// right prefix. Either way it needs no threshold fitted per verifier, and a long right
/// prefix whose product has drifted low does not hide the step that broke it.
pub fn doubted_step(scores: &[f32]) -> Option<usize> {
    let mut before = 1.0f32;
    let mut worst: Option<(usize, f32)> = None;
    for (i, &s) in scores.iter().enumerate() {
        let ratio = s / before.max(f32::MIN_POSITIVE);
        if worst.is_none_or(|(_, w)| ratio < w) {
            worst = Some((i, ratio));
        }
        before = s;
    }
    worst.map(|(i, _)| i)
}

/// Next steps the model proposes where a guided revision replaces the doubted step.
/// Measured on the default generator's wrong attempts: with 4, its revisions at level 3
/// were right no more often than a fresh sample; with 8 they were ahead at every level
/// (docs/results.md, "Revisions"). The proposals are one line each.
pub const PROPOSALS: u32 = 8;

/// The proposal a guided revision keeps, given the verifier's score of each proposal as
/// the next step: the best-scored one that is not the doubted step again (compared
/// without surrounding whitespace; on equal scores the one proposed more often, then
/// the earliest), or the first one if every proposal repeats it. None without
/// proposals.
pub fn pick_proposal<'p>(
    proposals: &'p [String],
    scores: &[f32],
    doubted: &str,
) -> Option<&'p str> {
    let doubted = doubted.trim();
    let count = |p: &str| proposals.iter().filter(|q| q.trim() == p).count();
    let mut best: Option<(&str, f32, usize)> = None;
    for (p, &s) in proposals.iter().zip(scores) {
        if p.trim() == doubted {
            continue;
        }
        let c = count(p.trim());
        if best.is_none_or(|(_, bs, bc)| s > bs || (s == bs && c > bc)) {
            best = Some((p, s, c));
        }
    }
    best.map(|(p, _, _)| p)
        .or(proposals.first().map(String::as_str))
}

/// Chains for a budget of `n` attempts when the request leaves it open: about sqrt(n).
pub fn default_chains(n: u32) -> u32 {
    ((n as f64).sqrt().round() as u32).clamp(1, n.max(1))
}

/// One attempt of a chain, with the verifier's step scores when it was scored.
struct Attempt {
    text: String,
    steps: Vec<String>,
    scores: Option<Vec<f32>>,
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
    // Scored attempts are revised where the verifier doubts them; unscored ones (the
    // majority rule) by showing the model its earlier attempts.
    let guided = strategy.rule() != super::Rule::Majority;
    let mut history: Vec<Vec<Attempt>> = (0..chains).map(|_| Vec::new()).collect();
    let mut all: Vec<Scored> = Vec::new();
    let mut left = n;
    let mut round = 0;
    while left > 0 {
        let active = (chains.min(left)) as usize;
        let heads = if guided {
            match guided_heads(ctx, &history[..active]).await? {
                Some(heads) => heads,
                None => break,
            }
        } else {
            vec![None; active]
        };
        let asks: Vec<(String, u32)> = history[..active]
            .iter()
            .zip(&heads)
            .map(|(earlier, head)| {
                let prompt = match head {
                    Some(steps) => format.partial_prompt(question, steps),
                    None if guided => format.prompt(question),
                    None => conditioned_prompt(ctx, earlier),
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
            .zip(heads)
            .map(|(a, head)| {
                let rest = a.into_iter().next().map(|s| s.text).unwrap_or_default();
                match head {
                    // The kept steps and the new one, then the model's finish.
                    Some(mut parts) => {
                        if !rest.trim().is_empty() {
                            parts.push(rest);
                        }
                        parts.join(&format.step_delimiter)
                    }
                    None => rest,
                }
            })
            .collect();
        let steps: Vec<Vec<String>> = texts.iter().map(|t| format.steps(t)).collect();
        let scores: Vec<Option<Vec<f32>>> = if guided {
            match ctx.score(steps.clone()).await? {
                Some(s) => s.into_iter().map(Some).collect(),
                None => vec![None; texts.len()],
            }
        } else {
            vec![None; texts.len()]
        };
        for (c, ((text, steps), scores)) in texts.into_iter().zip(steps).zip(scores).enumerate() {
            let score = guided.then(|| scores.as_ref().map_or(0.0, |s| ctx.aggregation().apply(s)));
            all.push(Scored {
                answer: format.answer(&text),
                text: text.clone(),
                score,
            });
            history[c].push(Attempt {
                text,
                steps,
                scores,
            });
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

/// The model-conditioned revision prompt: the chain's last few attempts, fewer if they
/// would crowd out a full answer; the plain prompt for a chain's first attempt.
fn conditioned_prompt<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    earlier: &[Attempt],
) -> String {
    let (format, question) = (ctx.format(), ctx.question());
    let limits = ctx.limits();
    let window = &earlier[earlier.len().saturating_sub(CONTEXT_ATTEMPTS)..];
    let texts: Vec<String> = window.iter().map(|a| a.text.clone()).collect();
    let mut from = 0;
    loop {
        let p = if from == texts.len() {
            format.prompt(question)
        } else {
            format.revision_prompt(question, &texts[from..])
        };
        if from == texts.len() || limits.room_after(&p) >= format.max_solution_tokens {
            return p;
        }
        from += 1;
    }
}

/// Where each chain's next attempt starts, for chains whose last attempt was scored:
/// its steps before the [`doubted_step`], then the best-scored of [`PROPOSALS`] sampled
/// next steps that is not the doubted one again ([`pick_proposal`]). All chains'
/// proposals are drawn in one call and scored in one. None per chain that starts
/// afresh; None overall if the budget cannot pay for the proposals.
async fn guided_heads<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    chains: &[Vec<Attempt>],
) -> Result<Option<Vec<Option<Vec<String>>>>> {
    let cuts: Vec<Option<(Vec<String>, &str)>> = chains
        .iter()
        .map(|chain| {
            let last = chain.last()?;
            let at = doubted_step(last.scores.as_ref()?).filter(|&at| at < last.steps.len())?;
            Some((last.steps[..at].to_vec(), last.steps[at].as_str()))
        })
        .collect();
    let partials: Vec<(&[String], u32)> = cuts
        .iter()
        .flatten()
        .map(|(kept, _)| (&kept[..], PROPOSALS))
        .collect();
    if partials.is_empty() {
        return Ok(Some(vec![None; chains.len()]));
    }
    let Some(outs) = ctx.expand(partials, Continuation::NextStep).await? else {
        return Ok(None);
    };
    let delim = ctx.format().step_delimiter.as_str();
    let proposals: Vec<Vec<String>> = outs
        .into_iter()
        .map(|samples| {
            samples
                .into_iter()
                .map(|s| s.text.strip_suffix(delim).unwrap_or(&s.text).to_string())
                .collect()
        })
        .collect();
    // Each proposal scored as the next step after the kept ones.
    let candidates: Vec<Vec<String>> = cuts
        .iter()
        .flatten()
        .zip(&proposals)
        .flat_map(|((kept, _), props)| {
            props.iter().map(move |p| {
                let mut steps = kept.clone();
                if !p.trim().is_empty() {
                    steps.push(p.clone());
                }
                steps
            })
        })
        .collect();
    let mut readings = match ctx.score(candidates.clone()).await? {
        Some(scores) => scores
            .into_iter()
            .zip(&candidates)
            .map(|(s, steps)| {
                if steps.is_empty() {
                    0.0
                } else {
                    s.last().copied().unwrap_or(0.0)
                }
            })
            .collect(),
        // Not enough budget left to score them: equal scores, so the commonest wins.
        None => vec![0.0; candidates.len()],
    }
    .into_iter();
    let mut proposals = proposals.into_iter();
    Ok(Some(
        cuts.into_iter()
            .map(|cut| {
                let (mut kept, doubted) = cut?;
                let props = proposals.next().unwrap_or_default();
                let scores: Vec<f32> = readings.by_ref().take(props.len()).collect();
                if let Some(step) = pick_proposal(&props, &scores, doubted) {
                    if !step.trim().is_empty() {
                        kept.push(step.to_string());
                    }
                }
                Some(kept)
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::{doubted_step, pick_proposal};

    #[test]
    fn a_revision_keeps_the_best_scored_proposal_that_is_not_the_doubted_step() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let doubted = "2+2: 2+2=5 => 5";
        let props = p(&[
            " 2+2: 2+2=5 => 5",
            "x",
            "2+2: 2+2=4 => 4",
            "2+2: 2+2=4 => 4 ",
        ]);
        // The doubted step again is out however well it scores; then the best score.
        let picked = pick_proposal(&props, &[0.99, 0.2, 0.9, 0.9], doubted);
        assert_eq!(picked, Some("2+2: 2+2=4 => 4"));
        let picked = pick_proposal(&props, &[0.99, 0.95, 0.9, 0.9], doubted);
        assert_eq!(picked, Some("x"));
        // Equal scores: the one proposed more often, then the earliest.
        let props = p(&["y", "x", "x", doubted]);
        assert_eq!(pick_proposal(&props, &[0.5; 4], doubted), Some("x"));
        assert_eq!(
            pick_proposal(&p(&["y", "x"]), &[0.5; 2], doubted),
            Some("y")
        );
        let again = p(&[doubted, doubted]);
        assert_eq!(pick_proposal(&again, &[0.5; 2], doubted), Some(doubted));
        assert_eq!(pick_proposal(&[], &[], doubted), None);
    }

    #[test]
    fn the_doubted_step_is_the_largest_relative_fall() {
        assert_eq!(doubted_step(&[]), None);
        assert_eq!(doubted_step(&[0.9]), Some(0));
        // A running product: readings 0.9, 0.8, 0.1, 0.95: the third step broke it,
        // although the second already left the product below the first.
        assert_eq!(doubted_step(&[0.9, 0.72, 0.072, 0.0684]), Some(2));
        // A product that drifted low on right steps still points at the real fall.
        assert_eq!(doubted_step(&[0.5, 0.25, 0.125, 0.001]), Some(3));
        // Ties go to the earliest step; a score that underflowed to 0 stays there.
        assert_eq!(doubted_step(&[0.5, 0.25]), Some(0));
        assert_eq!(doubted_step(&[0.9, 0.0, 0.0]), Some(1));
        // A PRM whose scores rise again (not a product) is read the same way.
        assert_eq!(doubted_step(&[0.9, 0.3, 0.8]), Some(1));
    }
}
