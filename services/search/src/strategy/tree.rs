//! Step-level tree search: beam search, lookahead, DVTS and REBASE.
//!
//! A node is a partial solution (its steps so far). Expanding a node samples the next
//! step: a generate call on `prompt + steps` with the step delimiter as stop string, so
//! the generator's prefix cache reuses everything before the new step (query affinity
//! keeps the calls on one node). The PRM scores each new path; a path is finished when
//! the model ends the solution (EOS), writes the answer line, or runs out of tokens.
//!
//! These strategies pay their cost in the paper's unit up front (beam search N,
//! lookahead N(k+1), DVTS N, REBASE N generations); tokens are reserved per call at
//! their worst case, and a search that cannot afford its next round stops and answers
//! from what it has.

use super::{Scored, StrategyKind};
use crate::context::{Context, Continuation};
use crate::error::Result;
use crate::traits::{Finish, Generate, Score};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Path {
    pub steps: Vec<String>,
    /// PRM score per step.
    pub scores: Vec<f32>,
    /// Ranking value: the aggregated score, or for lookahead the rollout's.
    pub value: f32,
    pub done: bool,
}

impl Path {
    pub fn to_scored<G: Generate, S: Score>(&self, ctx: &Context<'_, G, S>) -> Scored {
        let text = self.steps.join(&ctx.format().step_delimiter);
        Scored {
            answer: ctx.format().answer(&text),
            text,
            score: Some(ctx.aggregation().apply(&self.scores)),
        }
    }
}

/// Samples `widths[i]` next steps of `parents[i]` (all calls at once); None if the
/// budget cannot cover the round. Children come in parent order.
pub async fn expand<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    parents: &[Path],
    widths: &[u32],
) -> Result<Option<Vec<Path>>> {
    let owners: Vec<(&Path, u32)> = parents
        .iter()
        .zip(widths.iter().copied())
        .filter(|&(p, w)| w > 0 && !p.done)
        .collect();
    let partials = owners.iter().map(|&(p, w)| (&p.steps[..], w)).collect();
    let Some(outs) = ctx.expand(partials, Continuation::NextStep).await? else {
        return Ok(None);
    };
    let format = ctx.format();
    let delim = format.step_delimiter.as_str();
    let mut children = Vec::new();
    for ((parent, _), samples) in owners.into_iter().zip(outs) {
        for s in samples {
            let mut child = parent.clone();
            let step = s.text.strip_suffix(delim).unwrap_or(&s.text).to_string();
            let ends = s.finish != Finish::Stop || step.starts_with(format.answer_prefix.as_str());
            if !step.trim().is_empty() {
                child.steps.push(step);
            }
            child.done = ends || child.steps.len() == parent.steps.len();
            children.push(child);
        }
    }
    Ok(Some(children))
}

/// Scores every path's steps and sets its value; false if the budget cannot cover it.
pub async fn score<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    paths: &mut [Path],
) -> Result<bool> {
    let Some(scores) = ctx
        .score(paths.iter().map(|p| p.steps.clone()).collect())
        .await?
    else {
        return Ok(false);
    };
    for (p, s) in paths.iter_mut().zip(scores) {
        p.value = ctx.aggregation().apply(&s);
        p.scores = s;
    }
    Ok(true)
}

/// Lookahead: each open path's value becomes the score of a greedy rollout of up to
/// `depth` more steps (the path itself keeps its own steps).
async fn rollout<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    paths: &mut [Path],
    depth: u32,
) -> Result<bool> {
    if !score(ctx, paths).await? {
        return Ok(false);
    }
    let open: Vec<usize> = (0..paths.len()).filter(|&i| !paths[i].done).collect();
    if open.is_empty() {
        return Ok(true);
    }
    let partials = open.iter().map(|&i| (&paths[i].steps[..], 1)).collect();
    let Some(outs) = ctx
        .expand(partials, Continuation::Rollout { steps: depth })
        .await?
    else {
        return Ok(false);
    };
    let rolled: Vec<Vec<String>> = open
        .iter()
        .zip(outs)
        .map(|(&i, samples)| {
            let mut steps = paths[i].steps.clone();
            let text = samples
                .into_iter()
                .next()
                .map(|s| s.text)
                .unwrap_or_default();
            steps.extend(ctx.format().steps(&text).into_iter().take(depth as usize));
            steps
        })
        .collect();
    let Some(scores) = ctx.score(rolled).await? else {
        return Ok(false);
    };
    for (&i, s) in open.iter().zip(scores) {
        paths[i].value = ctx.aggregation().apply(&s);
    }
    Ok(true)
}

/// Moves finished paths from `active` to `finished`, reports progress, and returns
/// the open paths.
fn retire_finished<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    strategy: StrategyKind,
    round: u32,
    finished: &mut Vec<Path>,
    active: Vec<Path>,
) -> Vec<Path> {
    let (done, open): (Vec<Path>, Vec<Path>) = active.into_iter().partition(|p| p.done);
    finished.extend(done);
    let all: Vec<Scored> = finished
        .iter()
        .chain(&open)
        .map(|p| p.to_scored(ctx))
        .collect();
    ctx.report(
        strategy,
        &all,
        format!(
            "round {round}: {} finished, {} open",
            finished.len(),
            open.len()
        ),
    );
    open
}

/// Indices of the `k` best paths by value (ties: the earlier path).
fn top(paths: &[Path], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..paths.len()).collect();
    idx.sort_by(|&a, &b| paths[b].value.total_cmp(&paths[a].value).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

async fn evaluate<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    paths: &mut [Path],
    depth: u32,
) -> Result<bool> {
    if depth == 0 {
        score(ctx, paths).await
    } else {
        rollout(ctx, paths, depth).await
    }
}

/// Beam search (`depth == 0`) or lookahead search (`depth > 0`) with `n` beams of
/// width `width`. Returns the finished paths (and unfinished ones if it ran out).
pub async fn beam<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    strategy: StrategyKind,
    n: u32,
    width: u32,
    depth: u32,
    max_rounds: u32,
) -> Result<Vec<Scored>> {
    ctx.charge_generations(n * (depth + 1))?;
    let width = width.min(n).max(1);
    let mut finished: Vec<Path> = Vec::new();
    let mut active = match expand(ctx, &[Path::default()], &[n]).await? {
        Some(a) => a,
        None => return Ok(vec![]),
    };
    let mut evaluated = evaluate(ctx, &mut active, depth).await?;
    for round in 0..max_rounds {
        if !evaluated {
            break;
        }
        active = retire_finished(ctx, strategy, round, &mut finished, active);
        let slots = (n as usize).saturating_sub(finished.len());
        if slots == 0 || active.is_empty() {
            break;
        }
        let keep = ((n / width) as usize).max(1).min(active.len());
        let kept: Vec<Path> = top(&active, keep)
            .into_iter()
            .map(|i| active[i].clone())
            .collect();
        let mut widths = vec![0u32; kept.len()];
        let mut left = slots as u32;
        for w in widths.iter_mut() {
            *w = width.min(left);
            left -= *w;
        }
        match expand(ctx, &kept, &widths).await? {
            Some(children) => {
                active = children;
                evaluated = evaluate(ctx, &mut active, depth).await?;
            }
            None => {
                active = kept;
                break;
            }
        }
    }
    Ok(finished
        .iter()
        .chain(&active)
        .map(|p| p.to_scored(ctx))
        .collect())
}

/// DVTS: `n / width` independent subtrees, each keeping only its best child per step.
pub async fn dvts<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    strategy: StrategyKind,
    n: u32,
    width: u32,
    max_rounds: u32,
) -> Result<Vec<Scored>> {
    ctx.charge_generations(n)?;
    let width = width.min(n).max(1);
    let trees = (n / width).max(1) as usize;
    // Each subtree starts from its own `width` first steps.
    let Some(mut first) = expand(ctx, &vec![Path::default(); trees], &vec![width; trees]).await?
    else {
        return Ok(vec![]);
    };
    if !score(ctx, &mut first).await? {
        return Ok(first.iter().map(|p| p.to_scored(ctx)).collect());
    }
    let best_of = |group: &[Path]| group[top(group, 1)[0]].clone();
    let mut heads: Vec<Path> = first.chunks(width as usize).map(best_of).collect();
    for round in 0..max_rounds {
        let all: Vec<Scored> = heads.iter().map(|p| p.to_scored(ctx)).collect();
        ctx.report(
            strategy,
            &all,
            format!(
                "round {round}: {} of {} subtrees finished",
                heads.iter().filter(|p| p.done).count(),
                heads.len()
            ),
        );
        let open: Vec<usize> = (0..heads.len()).filter(|&i| !heads[i].done).collect();
        if open.is_empty() {
            break;
        }
        let parents: Vec<Path> = open.iter().map(|&i| heads[i].clone()).collect();
        let Some(mut children) = expand(ctx, &parents, &vec![width; parents.len()]).await? else {
            break;
        };
        if !score(ctx, &mut children).await? {
            break;
        }
        for (&i, group) in open.iter().zip(children.chunks(width as usize)) {
            heads[i] = best_of(group);
        }
    }
    Ok(heads.iter().map(|p| p.to_scored(ctx)).collect())
}

/// Splits `total` into integer shares proportional to `weights` (largest remainder).
pub fn apportion(total: u32, weights: &[f64]) -> Vec<u32> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 || !sum.is_finite() {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut out: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let mut rest = total - out.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    for i in order {
        if rest == 0 {
            break;
        }
        out[i] += 1;
        rest -= 1;
    }
    out
}

/// REBASE: at each depth the remaining width (N minus finished solutions) is shared
/// among the open nodes in proportion to softmax(value / temperature).
pub async fn rebase<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    strategy: StrategyKind,
    n: u32,
    temperature: f32,
    max_rounds: u32,
) -> Result<Vec<Scored>> {
    ctx.charge_generations(n)?;
    let mut finished: Vec<Path> = Vec::new();
    let Some(mut active) = expand(ctx, &[Path::default()], &[n]).await? else {
        return Ok(vec![]);
    };
    let mut scored = score(ctx, &mut active).await?;
    for round in 0..max_rounds {
        if !scored {
            break;
        }
        active = retire_finished(ctx, strategy, round, &mut finished, active);
        let width = n.saturating_sub(finished.len() as u32);
        if width == 0 || active.is_empty() {
            break;
        }
        let max = active.iter().map(|p| p.value).fold(f32::MIN, f32::max);
        let weights: Vec<f64> = active
            .iter()
            .map(|p| (((p.value - max) / temperature) as f64).exp())
            .collect();
        let widths = apportion(width, &weights);
        match expand(ctx, &active, &widths).await? {
            Some(children) => {
                active = children;
                scored = score(ctx, &mut active).await?;
            }
            None => break,
        }
    }
    Ok(finished
        .iter()
        .chain(&active)
        .map(|p| p.to_scored(ctx))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::apportion;

    #[test]
    fn apportion_sums_to_total_and_follows_weights() {
        assert_eq!(apportion(10, &[1.0, 1.0]), vec![5, 5]);
        assert_eq!(apportion(7, &[3.0, 1.0]).iter().sum::<u32>(), 7);
        assert_eq!(apportion(3, &[1.0, 1.0, 1.0, 1.0]), vec![1, 1, 1, 0]);
        assert_eq!(apportion(4, &[]), Vec::<u32>::new());
        assert_eq!(apportion(5, &[0.0]), vec![0]);
    }
}
