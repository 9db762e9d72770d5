//! Compute-optimal search (Snell et al. §3.2): estimate the question's difficulty from
//! a few probe samples scored by the PRM (the model's own prediction, no ground
//! truth), put it in one of five bins, and run what the policy says is best for that
//! bin and budget: a strategy and, over a ladder of generator models, the model and
//! the generations to spend ([`super::policy`]).
//!
//! The probes run on the cheapest model of the query's set (or the policy's
//! `probe_model`) and count against the budget. When the chosen model is the probe
//! model, sampling strategies reuse the probes as candidates; when it is another, the
//! probes are spent and discarded (samples of two models do not vote together), and
//! the decision says so.

use super::sampling::{sample, Stop};
use super::{Scored, StrategyKind};
use crate::budget::Usage;
use crate::context::Context;
use crate::error::Result;
use crate::models::Generators;
use crate::traits::{Generate, Score};
use std::time::{Duration, Instant};

pub use super::policy::{Choice, FlopsRow, Policy, Row, BINS};

/// What compute-optimal decided, for the response and for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// False when the policy's FLOPs row runs without probes: `bin` is then 0 and
    /// meaningless, and the probe fields are empty.
    pub probed: bool,
    pub bin: usize,
    pub mean_probe_score: f32,
    pub chosen: StrategyKind,
    /// The model the probes ran on.
    pub probe_model: String,
    /// The model the chosen strategy ran on.
    pub model: String,
    /// What the probes cost and how long they took.
    pub probe_usage: Usage,
    pub probe_time: Duration,
    /// Probes spent but not candidates: they ran on another model than the one chosen.
    pub probes_discarded: u32,
    /// Why the query ran elsewhere than the policy said (for the client).
    pub notes: Vec<String>,
}

/// Runs compute-optimal search; returns the candidates and the decision.
pub async fn compute_optimal<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    policy: &Policy,
) -> Result<(Vec<Scored>, Decision)> {
    let set = ctx.generators();
    let id = |i: usize| set.get(i).id.clone();
    // Which model to probe on: with a single-model policy or a pinned query, the
    // query's own; otherwise the policy's probe model, or the cheapest.
    let models_apply = !set.is_pinned() && policy.names_models();
    if let Some(row) = policy.flops_row(ctx.max_flops()).filter(|r| !r.probe) {
        return unprobed(ctx, row.row.get(0), models_apply).await;
    }
    let mut notes = Vec::new();
    let probe = locate(
        set,
        policy.probe_model.as_deref().filter(|_| models_apply),
        if models_apply { 0 } else { ctx.model() },
        &mut notes,
        |m, there| format!("the policy probes on {m}, which has no live member; probed on {there}"),
    );
    ctx.use_model(probe);

    let budget = ctx.generations_left();
    let probes_n = policy.probes.min(budget).max(1);
    let started = Instant::now();
    let probes = sample(
        ctx,
        StrategyKind::WeightedBestOfN,
        probes_n,
        probes_n,
        1,
        Stop::Never,
        vec![],
    )
    .await?;
    let probe_usage = ctx.used();
    let probe_time = started.elapsed();
    let scores: Vec<f32> = probes.iter().filter_map(|p| p.score).collect();
    let mean = if scores.is_empty() {
        0.0
    } else {
        scores.iter().sum::<f32>() / scores.len() as f32
    };
    let bin = policy.bin(mean);
    // Knowing the bin, an adaptive budget is granted afresh: what more generations
    // buy depends on how hard the question is (docs/load-adaptive.md).
    ctx.set_bin(bin);
    let budget = ctx.grant().generations.max(probes_n);
    let choice = policy.choose(budget, ctx.max_flops(), bin);
    let target = locate(
        set,
        choice.model.as_deref().filter(|_| models_apply),
        probe,
        &mut notes,
        |m, there| {
            format!(
                "the policy chose {m} for difficulty bin {}, which has no live member; ran on {there}",
                bin + 1
            )
        },
    );
    // Generations still to spend: the choice's total (probes included), within what
    // the budget has left.
    let spent = probe_usage.generations;
    let left = choice
        .generations
        .map_or(u32::MAX, |g| g.saturating_sub(spent))
        .min(ctx.generations_left());
    let mut decision = Decision {
        probed: true,
        bin,
        mean_probe_score: mean,
        chosen: choice.strategy,
        probe_model: id(probe),
        model: id(probe),
        probe_usage,
        probe_time,
        probes_discarded: 0,
        notes,
    };
    if left == 0 {
        return Ok((probes, decision));
    }
    let reused = if target == probe {
        probes
    } else {
        ctx.use_model(target);
        decision.model = id(target);
        decision.probes_discarded = probes.len() as u32;
        vec![]
    };
    let more = super::run(ctx, choice.strategy, left, reused).await?;
    Ok((more, decision))
}

/// Runs a FLOPs row's choice without probes: at budgets where probing would cost more
/// than knowing the difficulty saves, every question gets the same choice.
async fn unprobed<G: Generate, S: Score>(
    ctx: &Context<'_, G, S>,
    choice: &super::policy::Choice,
    models_apply: bool,
) -> Result<(Vec<Scored>, Decision)> {
    let set = ctx.generators();
    let mut notes = Vec::new();
    let target = locate(
        set,
        choice.model.as_deref().filter(|_| models_apply),
        ctx.model(),
        &mut notes,
        |m, there| format!("the policy chose {m}, which has no live member; ran on {there}"),
    );
    ctx.use_model(target);
    let left = choice
        .generations
        .unwrap_or(u32::MAX)
        .min(ctx.generations_left());
    let candidates = super::run(ctx, choice.strategy, left, vec![]).await?;
    let id = set.get(target).id.clone();
    Ok((
        candidates,
        Decision {
            probed: false,
            bin: 0,
            mean_probe_score: 0.0,
            chosen: choice.strategy,
            probe_model: String::new(),
            model: id,
            probe_usage: Usage::default(),
            probe_time: Duration::ZERO,
            probes_discarded: 0,
            notes,
        },
    ))
}

/// Where a model the policy names runs: its position in the query's set; `fallback`
/// when it names none; and `fallback` with a note for the client (`note(named, the
/// fallback's id)`) when the named model has no live member in the set.
fn locate<G: Generate>(
    set: &Generators<'_, G>,
    named: Option<&str>,
    fallback: usize,
    notes: &mut Vec<String>,
    note: impl FnOnce(&str, &str) -> String,
) -> usize {
    let Some(m) = named else {
        return fallback;
    };
    set.position(m).unwrap_or_else(|| {
        notes.push(note(m, &set.get(fallback).id));
        fallback
    })
}
