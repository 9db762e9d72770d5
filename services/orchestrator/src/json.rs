//! The response messages as JSON objects with the proto's field names: `ponder solve
//! --json` and `ponder status --json` print them, and the HTTP gateway puts them in its
//! responses' `ponder` field (proto3's JSON mapping uses lowerCamelCase; we
//! keep the snake_case names of the .proto, as `grpcurl --format-json` users and
//! `jq` scripts written against docs/cluster.md expect them). One object per line, so a
//! streamed solve is NDJSON: progress events, then the final response.
//!
//! Written by hand rather than derived: the generated prost types carry no serde, and
//! adding pbjson for three messages would generate and compile serde code for the
//! whole API in every crate that uses it.

use ponder_proto::v1 as pb;
use serde_json::{json, Value};

pub fn usage(u: &pb::Usage) -> Value {
    json!({
        "generations": u.generations,
        "generator_tokens": u.generator_tokens,
        "verifier_tokens": u.verifier_tokens,
        "flops": u.flops,
        "generator_flops": u.generator_flops,
        "verifier_flops": u.verifier_flops,
        "prompt_tokens": u.prompt_tokens,
        "cached_prompt_tokens": u.cached_prompt_tokens,
    })
}

pub fn solve_response(r: &pb::SolveResponse) -> Value {
    json!({
        "answer": r.answer,
        "solution": r.solution,
        "score": r.score,
        "strategy": r.strategy,
        "usage": r.usage.as_ref().map(usage),
        "request_id": r.request_id,
        "answers": r.answers.iter().map(|t| json!({
            "answer": t.answer,
            "votes": t.votes,
            "weight": t.weight,
        })).collect::<Vec<_>>(),
        "elapsed_seconds": r.elapsed_seconds,
        "calls_seconds": r.calls_seconds,
        "difficulty_bin": r.difficulty_bin,
        "routed_by": r.routed_by,
        "partial": r.partial,
        "model_id": r.model_id,
        "routing_notes": r.routing_notes,
        "budget_granted": r.budget_granted,
        "budget_reason": r.budget_reason,
        "budget_mode": budget_mode_name(r.budget_mode),
    })
}

/// `fixed` or `adaptive` (empty for an unset or unknown value).
pub fn budget_mode_name(mode: i32) -> &'static str {
    ponder_cluster::wire::budget_mode_from_pb(mode).map_or("", |m| m.name())
}

/// A progress event of a streamed solve (the final one is printed as its response).
pub fn event(e: &pb::SolveEvent) -> Value {
    json!({
        "best_answer": e.best_answer,
        "best_score": e.best_score,
        "usage": e.usage.as_ref().map(usage),
        "progress": e.progress,
    })
}

pub fn status(s: &pb::ClusterStatusResponse) -> Value {
    json!({
        "cluster": s.cluster,
        "discovery": s.discovery,
        "members": s.members.iter().map(|m| json!({
            "role": m.role,
            "instance_id": m.instance_id,
            "address": m.address,
            "model_id": m.model_id,
            "health": m.health,
            "in_flight": m.in_flight,
            "requests": m.requests,
            "failures": m.failures,
            "engine": m.engine,
        })).collect::<Vec<_>>(),
        "models": s.models.iter().map(|m| json!({
            "role": m.role,
            "model_id": m.model_id,
            "parameters": m.parameters,
            "flops_per_token": m.flops_per_token,
            "ready": m.ready,
            "serving": m.serving,
            "default": m.default,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_keeps_the_proto_field_names() {
        let r = pb::SolveResponse {
            answer: "85".into(),
            usage: Some(pb::Usage {
                generations: 4,
                flops: 3.0,
                generator_flops: 2.0,
                verifier_flops: 1.0,
                ..Default::default()
            }),
            routing_notes: vec!["note".into()],
            ..Default::default()
        };
        let v = solve_response(&r);
        assert_eq!(v["answer"], "85");
        assert_eq!(v["usage"]["generations"], 4);
        assert_eq!(v["usage"]["verifier_flops"], 1.0);
        assert_eq!(v["routing_notes"][0], "note");
        assert!(v["partial"].is_boolean());
    }
}
