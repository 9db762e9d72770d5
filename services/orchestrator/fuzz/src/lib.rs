//! The checks behind the fuzz targets, and the seed inputs of their corpora.
//!
//! Shared with the regression test `services/orchestrator/tests/fuzz_corpus.rs`, which
//! includes this file with `#[path]` and replays the committed corpora on stable in the
//! normal test suite. So this file uses no `crate::` paths and only crates that both the
//! fuzz crate and the orchestrator's tests have (ponder-*, prost, tonic).
//!
//! What is checked, for every input:
//! - nothing panics;
//! - every rejection is INVALID_ARGUMENT (`SearchError::Invalid` before the mapping to
//!   a status) with a message that says why (more than 10 bytes);
//! - what is accepted is within the documented ranges and is what was asked for.
#![allow(dead_code)]

use ponder_cluster::status::to_status;
use ponder_cluster::wire;
use ponder_orchestrator::request;
use ponder_proto::v1 as pb;
use ponder_search::budget::{MAX_GENERATIONS, MAX_TOKENS, MIN_TOKENS};
use ponder_search::{Query, QueryLimits, SearchError, SolutionFormat};
use prost::Message;
use std::time::{Duration, Instant};
use tonic::{Code, Status};

/// What one input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not a protobuf message of the type (prost refused it).
    Undecodable,
    Rejected,
    Accepted,
}

/// An operator's small caps (as `ponder-orchestrator --max-generations 64
/// --max-rounds 20 --max-calls-per-query 4 --max-query-seconds 10`).
pub fn small_limits() -> QueryLimits {
    QueryLimits {
        max_generations: 64,
        max_rounds: 20,
        max_calls_in_flight: 4,
        max_time: Some(Duration::from_secs(10)),
    }
}

fn assert_says_why(code: Code, message: &str, what: &dyn std::fmt::Debug) {
    assert_eq!(code, Code::InvalidArgument, "{what:?}: {message}");
    assert!(
        message.trim().len() > 10,
        "a rejection must say why: {message:?} for {what:?}"
    );
}

fn assert_invalid(e: &SearchError, what: &dyn std::fmt::Debug) {
    assert!(matches!(e, SearchError::Invalid(_)), "{e:?} for {what:?}");
}

/// The orchestrator's edge as `OrchestratorService::accept` runs it: convert
/// (`request::params`), set the operator's limits, validate once
/// (`SolveParams::validate`), the error mapped by `to_status`. (The policy is left
/// unset, which is the built-in one; the deadline header is not part of the input.)
fn accept(req: &pb::SolveRequest, limits: QueryLimits) -> Result<Query, Status> {
    let mut params = request::params(req, None, request::DEFAULT_GENERATIONS, "fuzz".into())?;
    params.limits = limits;
    params.validate(&SolutionFormat::default()).map_err(|e| {
        assert_invalid(&e, req);
        to_status(e)
    })
}

/// One accepted request: within range, and what the client asked for.
fn check_accepted(req: &pb::SolveRequest, q: &Query, limits: QueryLimits, before: Instant) {
    let b = q.budget();
    assert!(
        (1..=limits.max_generations.min(MAX_GENERATIONS)).contains(&b.max_generations),
        "{req:?}: {b:?}"
    );
    match &req.budget {
        None => assert_eq!(b.max_generations, request::DEFAULT_GENERATIONS),
        Some(w) => {
            assert_eq!(b.max_generations, w.max_generations);
            assert_eq!(b.max_tokens, (w.max_tokens != 0).then_some(w.max_tokens));
        }
    }
    if let Some(t) = b.max_tokens {
        assert!((MIN_TOKENS..=MAX_TOKENS).contains(&t), "{req:?}: {b:?}");
    }
    match limits.max_time {
        Some(cap) => {
            let d = b.deadline.expect("the time cap sets a deadline");
            assert!(d >= before && d <= Instant::now() + cap, "{req:?}: {b:?}");
        }
        None => assert!(b.deadline.is_none(), "{req:?}: {b:?}"),
    }
    let t = q.temperature();
    assert!(t > 0.0 && t <= 2.0, "{req:?}: temperature {t}");
    if req.temperature != 0.0 {
        assert_eq!(t.to_bits(), req.temperature.to_bits(), "{req:?}");
    }
    if let Some(s) = q.strategy() {
        s.validate()
            .unwrap_or_else(|e| panic!("{req:?}: accepted strategy {s:?} fails: {e}"));
    }
    SolutionFormat::default()
        .check_question(q.question())
        .unwrap_or_else(|e| panic!("{req:?}: accepted question fails: {e}"));
    assert_eq!(q.question(), req.question);
    assert_eq!(q.seed(), req.seed);
    assert_eq!(q.strict(), req.strict);
    assert_eq!(q.request_id(), "fuzz");
    assert_eq!(
        q.aggregation().name(),
        if req.aggregation.is_empty() {
            "last"
        } else {
            req.aggregation.as_str()
        }
    );
}

/// A decoded `SolveRequest` through the edge, with the API's own bounds and with an
/// operator's small ones; the two must agree except on the generations cap.
pub fn check_solve_request(req: &pb::SolveRequest) -> Verdict {
    let before = Instant::now();
    let mut verdicts = [Verdict::Rejected; 2];
    for (i, limits) in [QueryLimits::default(), small_limits()]
        .into_iter()
        .enumerate()
    {
        match accept(req, limits) {
            Ok(q) => {
                check_accepted(req, &q, limits, before);
                verdicts[i] = Verdict::Accepted;
            }
            Err(e) => assert_says_why(e.code(), e.message(), req),
        }
    }
    let asked = req
        .budget
        .as_ref()
        .map_or(request::DEFAULT_GENERATIONS, |b| b.max_generations);
    match verdicts {
        [Verdict::Accepted, Verdict::Rejected] => assert!(
            asked > small_limits().max_generations,
            "{req:?}: the small limits refused a request within them"
        ),
        [Verdict::Rejected, Verdict::Accepted] => {
            panic!("{req:?}: accepted under small limits, refused under the default ones")
        }
        _ => {}
    }
    verdicts[0]
}

/// Target `solve_request`: the bytes as a `SolveRequest`.
pub fn solve_request(data: &[u8]) -> Verdict {
    match pb::SolveRequest::decode(data) {
        Ok(req) => check_solve_request(&req),
        Err(_) => Verdict::Undecodable,
    }
}

/// A generate call as a generator node reads it (`wire::gen_request_from_pb`).
pub fn check_generate_request(msg: &pb::GenerateRequest) -> Verdict {
    match wire::gen_request_from_pb(msg.clone(), "fuzz".into()) {
        Ok(r) => {
            let p = msg.params.as_ref().expect("accepted without params");
            assert!(r.max_tokens >= 1 && r.max_tokens == p.max_tokens, "{msg:?}");
            assert_eq!(r.prompt, msg.prompt);
            assert_eq!(r.n, msg.n);
            assert_eq!(r.stop, p.stop);
            assert_eq!((r.seed, r.top_k), (p.seed, p.top_k));
            assert_eq!(r.temperature.to_bits(), p.temperature.to_bits());
            let top_p = if p.top_p == 0.0 { 1.0 } else { p.top_p };
            assert_eq!(r.top_p.to_bits(), top_p.to_bits(), "{msg:?}");
            assert_eq!(r.request_id, "fuzz");
            // What the pools send is what the node reads back.
            let again = wire::gen_request_from_pb(wire::gen_request_to_pb(&r), "fuzz".into())
                .expect("a request read from the wire is refused after a round trip");
            assert_eq!(format!("{again:?}"), format!("{r:?}"));
            Verdict::Accepted
        }
        Err(e) => {
            assert_invalid(&e, msg);
            let s = to_status(e);
            assert_says_why(s.code(), s.message(), msg);
            Verdict::Rejected
        }
    }
}

/// A score call as a verifier node reads it (`wire::score_request_from_pb`).
pub fn check_score_request(msg: &pb::ScoreRequest) -> Verdict {
    match wire::score_request_from_pb(msg.clone(), "fuzz".into()) {
        Ok(r) => {
            assert_eq!(r.question, msg.question);
            assert_eq!(r.candidates.len(), msg.candidates.len());
            for (c, w) in r.candidates.iter().zip(&msg.candidates) {
                assert!(!c.steps.is_empty(), "{msg:?}");
                assert_eq!(c.steps, w.steps);
            }
            assert_eq!(r.request_id, "fuzz");
            let again = wire::score_request_from_pb(wire::score_request_to_pb(&r), "fuzz".into())
                .expect("a request read from the wire is refused after a round trip");
            assert_eq!(again, r);
            Verdict::Accepted
        }
        Err(e) => {
            assert_invalid(&e, msg);
            let s = to_status(e);
            assert_says_why(s.code(), s.message(), msg);
            let i = msg.candidates.iter().position(|c| c.steps.is_empty());
            assert!(
                i.is_some(),
                "{msg:?}: refused with every candidate stepped: {s:?}"
            );
            assert!(s.message().contains(&format!("candidates[{}]", i.unwrap())));
            Verdict::Rejected
        }
    }
}

/// Target `worker_requests`: the first byte picks the message (even: a
/// `GenerateRequest`, odd: a `ScoreRequest`), the rest is its encoding.
pub fn worker_requests(data: &[u8]) -> Verdict {
    let Some((&pick, bytes)) = data.split_first() else {
        return Verdict::Undecodable;
    };
    if pick % 2 == 0 {
        match pb::GenerateRequest::decode(bytes) {
            Ok(m) => check_generate_request(&m),
            Err(_) => Verdict::Undecodable,
        }
    } else {
        match pb::ScoreRequest::decode(bytes) {
            Ok(m) => check_score_request(&m),
            Err(_) => Verdict::Undecodable,
        }
    }
}

/// The hand-written seeds: (target, name, bytes, verdict under the default limits).
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>, Verdict)> {
    use pb::strategy::Kind;
    use Verdict::*;
    let q = |question: &str| pb::SolveRequest {
        question: question.into(),
        ..Default::default()
    };
    let with = |kind: Kind| pb::SolveRequest {
        strategy: Some(pb::Strategy { kind: Some(kind) }),
        budget: Some(pb::Budget {
            max_generations: 32,
            max_tokens: 4096,
            max_flops: 0.0,
            min_generations: 0,
        }),
        ..q("(47+38)*3-19")
    };
    let solve: Vec<(&str, pb::SolveRequest, Verdict)> = vec![
        ("valid-defaults", q("(47+38)*3-19"), Accepted),
        (
            "valid-beam-search",
            with(Kind::BeamSearch(pb::BeamSearch {
                beam_width: 4,
                max_rounds: 10,
            })),
            Accepted,
        ),
        (
            "valid-lookahead",
            with(Kind::Lookahead(pb::Lookahead {
                beam_width: 4,
                depth: 2,
                max_rounds: 0,
            })),
            Accepted,
        ),
        (
            "valid-rebase",
            with(Kind::Rebase(pb::Rebase {
                temperature: 0.3,
                max_rounds: 5,
            })),
            Accepted,
        ),
        (
            "valid-revisions",
            with(Kind::Revisions(pb::Revisions {
                chains: 2,
                majority: true,
            })),
            Accepted,
        ),
        (
            "valid-adaptive",
            with(Kind::Adaptive(pb::AdaptiveStopping {
                wave_size: 4,
                stop_share: 0.6,
                majority: false,
            })),
            Accepted,
        ),
        (
            "valid-name-and-fields",
            pb::SolveRequest {
                seed: 7,
                temperature: 0.7,
                aggregation: "min".into(),
                strict: true,
                ..with(Kind::Name("dvts:4".into()))
            },
            Accepted,
        ),
        (
            "valid-compute-optimal",
            with(Kind::ComputeOptimal(pb::ComputeOptimal {})),
            Accepted,
        ),
        ("invalid-empty-question", q("  "), Rejected),
        ("invalid-newline-question", q("1+1\n2+2"), Rejected),
        ("invalid-long-question", q(&"9".repeat(5000)), Rejected),
        (
            "invalid-temperature",
            pb::SolveRequest {
                temperature: 3.0,
                ..q("1+1")
            },
            Rejected,
        ),
        (
            "invalid-temperature-nan",
            pb::SolveRequest {
                temperature: f32::NAN,
                ..q("1+1")
            },
            Rejected,
        ),
        (
            "invalid-budget-generations",
            pb::SolveRequest {
                budget: Some(pb::Budget {
                    max_generations: 5000,
                    max_tokens: 0,
                    max_flops: 0.0,
                    min_generations: 0,
                }),
                ..q("1+1")
            },
            Rejected,
        ),
        (
            "invalid-budget-tokens",
            pb::SolveRequest {
                budget: Some(pb::Budget {
                    max_generations: 8,
                    max_tokens: 1,
                    max_flops: 0.0,
                    min_generations: 0,
                }),
                ..q("1+1")
            },
            Rejected,
        ),
        (
            "invalid-strategy-name",
            with(Kind::Name("mcts".into())),
            Rejected,
        ),
        (
            "invalid-beam-width",
            with(Kind::BeamSearch(pb::BeamSearch {
                beam_width: 99_999,
                max_rounds: 0,
            })),
            Rejected,
        ),
        (
            "invalid-aggregation",
            pb::SolveRequest {
                aggregation: "median".into(),
                ..q("1+1")
            },
            Rejected,
        ),
        (
            // Accepted by the API's bounds, refused by the small limits.
            "valid-above-small-limits",
            pb::SolveRequest {
                budget: Some(pb::Budget {
                    max_generations: 100,
                    max_tokens: 0,
                    max_flops: 0.0,
                    min_generations: 0,
                }),
                ..q("1+1")
            },
            Accepted,
        ),
    ];
    let mut out: Vec<_> = solve
        .into_iter()
        .map(|(n, r, v)| ("solve_request", n, r.encode_to_vec(), v))
        .collect();
    out.push((
        "solve_request",
        "garbage",
        vec![0xff, 0xff, 0xff],
        Undecodable,
    ));

    let params = |max_tokens| pb::SamplingParams {
        temperature: 0.8,
        top_p: 0.0,
        top_k: 0,
        max_tokens,
        stop: vec!["\n".into()],
        seed: 1,
    };
    let generate = |params| pb::GenerateRequest {
        prompt: "Q: 1+2\nA:".into(),
        n: 4,
        params,
    };
    let pick = |b: u8, m: Vec<u8>| [vec![b], m].concat();
    let step = |s: &[&str]| pb::Candidate {
        steps: s.iter().map(|s| s.to_string()).collect(),
    };
    let score = |candidates| pb::ScoreRequest {
        question: "1+2".into(),
        candidates,
    };
    out.extend(
        [
            (
                "valid-generate",
                pick(0, generate(Some(params(64))).encode_to_vec()),
                Accepted,
            ),
            (
                "invalid-generate-no-params",
                pick(0, generate(None).encode_to_vec()),
                Rejected,
            ),
            (
                "invalid-generate-max-tokens",
                pick(0, generate(Some(params(0))).encode_to_vec()),
                Rejected,
            ),
            (
                "valid-score",
                pick(
                    1,
                    score(vec![step(&["1+2=3", "3"]), step(&["3"])]).encode_to_vec(),
                ),
                Accepted,
            ),
            (
                "valid-score-empty",
                pick(1, score(vec![]).encode_to_vec()),
                Accepted,
            ),
            (
                "invalid-score-no-steps",
                pick(1, score(vec![step(&["3"]), step(&[])]).encode_to_vec()),
                Rejected,
            ),
        ]
        .into_iter()
        .map(|(n, b, v)| ("worker_requests", n, b, v)),
    );
    out
}
