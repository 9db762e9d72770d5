//! Converting between wire types and search types: a `SolveRequest` into
//! [`SolveParams`], an [`Outcome`] into a `SolveResponse`.
//!
//! Only conversion happens here (a name to a strategy, a string to an aggregation,
//! wire numbers to a [`Budget`]); the request as a whole is checked once, by
//! [`SolveParams::validate`], in the service. Every rejection is INVALID_ARGUMENT with
//! a message naming the field and what to send instead; nothing here can panic on
//! any input.

use ponder_cluster::wire;
use ponder_proto::v1 as pb;
use ponder_search::strategy::{
    DEFAULT_BEAM_WIDTH, DEFAULT_LOOKAHEAD, DEFAULT_MAX_ROUNDS, DEFAULT_REBASE_TEMPERATURE,
    DEFAULT_STOP_SHARE, DEFAULT_WAVE,
};
use ponder_search::{
    Aggregation, Budget, Outcome, Progress, Rule, SolveParams, StrategyKind, Usage,
};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;
use tonic::Status;

/// The default budget when a request sets none (the search crate's default).
pub use ponder_search::budget::DEFAULT_GENERATIONS;

/// The strategy a request asks for; None = best available. Its parameters are
/// range-checked later, with the rest of the request ([`SolveParams::validate`]).
pub fn strategy(s: Option<&pb::Strategy>) -> Result<Option<StrategyKind>, Status> {
    use pb::strategy::Kind;
    let Some(kind) = s.and_then(|s| s.kind.as_ref()) else {
        return Ok(None);
    };
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    let rule = |majority: bool| {
        if majority {
            Rule::Majority
        } else {
            Rule::Weighted
        }
    };
    let s = match kind {
        Kind::SelfConsistency(_) => StrategyKind::SelfConsistency,
        Kind::BestOfN(_) => StrategyKind::BestOfN,
        Kind::WeightedBestOfN(_) => StrategyKind::WeightedBestOfN,
        Kind::BeamSearch(b) => StrategyKind::BeamSearch {
            width: or(b.beam_width, DEFAULT_BEAM_WIDTH),
            max_rounds: or(b.max_rounds, DEFAULT_MAX_ROUNDS),
        },
        Kind::Lookahead(l) => StrategyKind::Lookahead {
            width: or(l.beam_width, DEFAULT_BEAM_WIDTH),
            depth: or(l.depth, DEFAULT_LOOKAHEAD),
            max_rounds: or(l.max_rounds, DEFAULT_MAX_ROUNDS),
        },
        Kind::Dvts(d) => StrategyKind::Dvts {
            width: or(d.beam_width, DEFAULT_BEAM_WIDTH),
            max_rounds: or(d.max_rounds, DEFAULT_MAX_ROUNDS),
        },
        Kind::Rebase(r) => StrategyKind::Rebase {
            temperature: if r.temperature == 0.0 {
                DEFAULT_REBASE_TEMPERATURE
            } else {
                r.temperature
            },
            max_rounds: or(r.max_rounds, DEFAULT_MAX_ROUNDS),
        },
        Kind::Revisions(r) => StrategyKind::Revisions {
            chains: r.chains,
            rule: rule(r.majority),
        },
        Kind::Adaptive(a) => StrategyKind::Adaptive {
            wave: or(a.wave_size, DEFAULT_WAVE),
            share: if a.stop_share == 0.0 {
                DEFAULT_STOP_SHARE
            } else {
                a.stop_share
            },
            rule: rule(a.majority),
        },
        Kind::ComputeOptimal(_) => StrategyKind::ComputeOptimal,
        Kind::Name(n) if n.is_empty() => return Ok(None),
        Kind::Name(n) => StrategyKind::parse(n)
            .map_err(|e| ponder_cluster::status::invalid_argument(format!("strategy.name: {e}")))?,
    };
    Ok(Some(s))
}

/// The client's deadline from the `grpc-timeout` header ("<digits><unit>").
pub fn deadline(metadata: &MetadataMap) -> Option<Instant> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 {
        return None;
    }
    let (num, unit) = v.split_at(v.len() - 1);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(d)
}

/// The longest `SolveRequest.model_id` accepted (it is echoed in error messages).
pub const MAX_MODEL_ID_BYTES: usize = 256;

/// The request as search parameters, not yet validated. Wire defaults become
/// `None`: no budget gives `default_generations`, temperature 0 the default one.
pub fn params(
    req: &pb::SolveRequest,
    deadline: Option<Instant>,
    default_generations: u32,
    request_id: String,
) -> Result<SolveParams, Status> {
    let budget = match &req.budget {
        None => Budget::new(default_generations, 0, deadline),
        Some(b) => Budget::new(b.max_generations, b.max_tokens, deadline)
            .and_then(|budget| budget.with_max_flops(b.max_flops))
            .and_then(|budget| budget.with_min_generations(b.min_generations)),
    }
    .map_err(|e| ponder_cluster::status::invalid_argument(e.to_string()))?;
    if req.model_id.len() > MAX_MODEL_ID_BYTES {
        return Err(ponder_cluster::status::invalid_argument(format!(
            "model_id is {} bytes; a model id is at most {MAX_MODEL_ID_BYTES} (ClusterStatus lists the served ones)",
            req.model_id.len()
        )));
    }
    let mut p = SolveParams::new(req.question.clone(), budget, req.seed);
    p.strategy = strategy(req.strategy.as_ref())?;
    p.temperature = (req.temperature != 0.0).then_some(req.temperature);
    p.aggregation = Aggregation::parse(&req.aggregation)
        .map_err(|e| ponder_cluster::status::invalid_argument(format!("aggregation: {e}")))?;
    p.request_id = request_id;
    p.strict = req.strict;
    Ok(p)
}

pub fn usage(u: &Usage) -> pb::Usage {
    pb::Usage {
        generations: u.generations,
        generator_tokens: u.generator_tokens,
        verifier_tokens: u.verifier_tokens,
        flops: u.flops,
        cached_prompt_tokens: u.cached_prompt_tokens,
        prompt_tokens: u.prompt_tokens,
        generator_flops: u.generator_flops,
        verifier_flops: u.verifier_flops,
    }
}

/// A progress event of a streaming solve (the final event is made from the
/// response).
pub fn event(p: &Progress) -> pb::SolveEvent {
    pb::SolveEvent {
        best_answer: p.best_answer().unwrap_or_default().to_string(),
        best_score: p.best_score(),
        usage: Some(usage(&p.usage)),
        progress: p.message.clone(),
        r#final: None,
    }
}

/// A query's result: the search's outcome and the generator model it ran on.
#[derive(Debug, Clone)]
pub struct Answer {
    pub outcome: Outcome,
    pub model: ponder_cluster::models::ModelChoice,
}

pub fn response(a: Answer, request_id: &str) -> pb::SolveResponse {
    let o = a.outcome;
    pb::SolveResponse {
        budget_granted: o.granted,
        budget_reason: o.grant_reason.as_str().into(),
        budget_mode: wire::budget_mode_to_pb(Some(o.budget_mode)).into(),
        model_id: a.model.model_id,
        routing_notes: a.model.notes,
        elapsed_seconds: o.elapsed.as_secs_f64(),
        calls_seconds: o.calls.as_secs_f64(),
        partial: o.partial,
        answer: o.answer.unwrap_or_default(),
        solution: o.solution,
        score: o.score,
        strategy: o.strategy.spec(),
        difficulty_bin: o
            .decision
            .as_ref()
            .filter(|d| d.probed)
            .map_or(0, |d| d.bin as u32 + 1),
        routed_by: if o.decision.is_some() {
            "compute_optimal".into()
        } else {
            String::new()
        },
        usage: Some(usage(&o.usage)),
        request_id: request_id.to_string(),
        answers: o
            .tallies
            .into_iter()
            .map(|t| pb::AnswerTally {
                answer: t.answer,
                votes: t.votes,
                weight: t.weight,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", "1500m".parse().unwrap());
        let d = deadline(&m).unwrap() - Instant::now();
        assert!(d <= Duration::from_millis(1500) && d > Duration::from_millis(1400));
        m.insert("grpc-timeout", "99999999H".parse().unwrap());
        let _ = deadline(&m); // no overflow panic
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert!(deadline(&m).is_none());
    }

    #[test]
    fn strategies_by_message_and_name() {
        use pb::strategy::Kind;
        let s = |k| Some(pb::Strategy { kind: Some(k) });
        assert_eq!(strategy(None).unwrap(), None);
        assert_eq!(
            strategy(s(Kind::BestOfN(pb::BestOfN {})).as_ref()).unwrap(),
            Some(StrategyKind::BestOfN)
        );
        assert_eq!(
            strategy(s(Kind::Name("majority".into())).as_ref()).unwrap(),
            Some(StrategyKind::SelfConsistency)
        );
        let e = strategy(s(Kind::Name("mcts".into())).as_ref()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("available"));
    }
}
