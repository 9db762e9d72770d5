//! The wire form of the two capabilities' requests and outputs, in both directions.
//!
//! Why here and only here: the gRPC pools (the orchestrator's side of a call) and the
//! worker nodes (the serving side) speak the same messages. Converting once per direction
//! in one module means a field added to `ponder.v1` is mapped in one place, and the
//! worker nodes validate what arrives exactly as the pools build it.

use ponder_proto::v1 as pb;
use ponder_search::{
    BudgetMode, Candidate, Finish, GenOutput, GenRequest, Result, Sample, ScoreOutput,
    ScoreRequest, SearchError,
};

/// A budget mode as the wire enum (None: unspecified, the server's default).
pub fn budget_mode_to_pb(mode: Option<BudgetMode>) -> pb::BudgetMode {
    match mode {
        None => pb::BudgetMode::Unspecified,
        Some(BudgetMode::Fixed) => pb::BudgetMode::Fixed,
        Some(BudgetMode::Adaptive) => pb::BudgetMode::Adaptive,
    }
}

/// The wire enum as a budget mode; None for unspecified and for values this build does
/// not know (a newer peer's), which take the default.
pub fn budget_mode_from_pb(mode: i32) -> Option<BudgetMode> {
    match pb::BudgetMode::try_from(mode).ok()? {
        pb::BudgetMode::Unspecified => None,
        pb::BudgetMode::Fixed => Some(BudgetMode::Fixed),
        pb::BudgetMode::Adaptive => Some(BudgetMode::Adaptive),
    }
}

/// `Finish` as the wire enum.
pub fn finish_to_pb(f: Finish) -> pb::FinishReason {
    match f {
        Finish::Stop => pb::FinishReason::Stop,
        Finish::Eos => pb::FinishReason::Eos,
        Finish::Length => pb::FinishReason::Length,
    }
}

/// The wire enum as `Finish` (unknown values read as `Length`: the sample was cut).
pub fn finish_from_pb(r: i32) -> Finish {
    match pb::FinishReason::try_from(r) {
        Ok(pb::FinishReason::Stop) => Finish::Stop,
        Ok(pb::FinishReason::Eos) => Finish::Eos,
        _ => Finish::Length,
    }
}

/// A generate call as sent to a generator node.
pub fn gen_request_to_pb(req: &GenRequest) -> pb::GenerateRequest {
    pb::GenerateRequest {
        prompt: req.prompt.clone(),
        n: req.n,
        params: Some(pb::SamplingParams {
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: req.top_k,
            max_tokens: req.max_tokens,
            stop: req.stop.clone(),
            seed: req.seed,
        }),
    }
}

/// A generate call as a generator node reads it, with the documented defaults for
/// zeros (`top_p` 0 means 1). The node's own deadline handling is tonic's.
pub fn gen_request_from_pb(req: pb::GenerateRequest, request_id: String) -> Result<GenRequest> {
    let p = req
        .params
        .ok_or_else(|| SearchError::invalid("params is required (at least params.max_tokens)"))?;
    if p.max_tokens == 0 {
        return Err(SearchError::invalid("params.max_tokens must be at least 1"));
    }
    Ok(GenRequest {
        prompt: req.prompt,
        n: req.n,
        temperature: p.temperature,
        top_p: if p.top_p == 0.0 { 1.0 } else { p.top_p },
        top_k: p.top_k,
        max_tokens: p.max_tokens,
        stop: p.stop,
        seed: p.seed,
        affinity: 0,
        deadline: None,
        request_id,
        tenant: 0,
    })
}

/// A generator node's answer on the wire.
pub fn gen_output_to_pb(out: GenOutput) -> pb::GenerateResponse {
    pb::GenerateResponse {
        completions: out
            .samples
            .into_iter()
            .enumerate()
            .map(|(i, s)| pb::Completion {
                index: i as u32,
                text: s.text,
                tokens: s.tokens,
                finish_reason: finish_to_pb(s.finish) as i32,
                stop: s.stop.unwrap_or_default(),
                logprob: s.logprob,
            })
            .collect(),
        prompt_tokens: out.prompt_tokens,
        cached_prompt_tokens: out.cached_prompt_tokens,
    }
}

/// A generator node's answer as the pool reads it; `parameters` is the serving model's
/// size (from its ModelInfo), for the FLOPs.
pub fn gen_output_from_pb(resp: pb::GenerateResponse, parameters: u64) -> GenOutput {
    let samples = resp
        .completions
        .into_iter()
        .map(|c| Sample {
            finish: finish_from_pb(c.finish_reason),
            stop: (!c.stop.is_empty()).then_some(c.stop),
            text: c.text,
            tokens: c.tokens,
            logprob: c.logprob,
        })
        .collect();
    GenOutput::new(
        samples,
        resp.prompt_tokens,
        resp.cached_prompt_tokens,
        parameters,
    )
}

/// A score call as sent to a verifier node.
pub fn score_request_to_pb(req: &ScoreRequest) -> pb::ScoreRequest {
    pb::ScoreRequest {
        question: req.question.clone(),
        candidates: req
            .candidates
            .iter()
            .map(|c| pb::Candidate {
                steps: c.steps.clone(),
            })
            .collect(),
    }
}

/// A score call as a verifier node reads it: every candidate needs a step.
pub fn score_request_from_pb(req: pb::ScoreRequest, request_id: String) -> Result<ScoreRequest> {
    if let Some(i) = req.candidates.iter().position(|c| c.steps.is_empty()) {
        return Err(SearchError::invalid(format!(
            "candidates[{i}] has no steps; every candidate needs at least one"
        )));
    }
    Ok(ScoreRequest {
        question: req.question,
        candidates: req
            .candidates
            .into_iter()
            .map(|c| Candidate { steps: c.steps })
            .collect(),
        deadline: None,
        affinity: 0,
        request_id,
        tenant: 0,
    })
}

/// A verifier node's answer on the wire.
pub fn score_output_to_pb(out: ScoreOutput) -> pb::ScoreResponse {
    pb::ScoreResponse {
        candidates: out
            .scores
            .into_iter()
            .map(|scores| pb::StepScores { scores })
            .collect(),
        tokens: out.tokens,
    }
}

/// A verifier node's answer as the pool reads it: one score list per candidate sent.
pub fn score_output_from_pb(
    resp: pb::ScoreResponse,
    candidates: usize,
    parameters: u64,
) -> Result<ScoreOutput> {
    if resp.candidates.len() != candidates {
        return Err(SearchError::Internal(format!(
            "verifier returned {} score lists for {candidates} candidates",
            resp.candidates.len(),
        )));
    }
    Ok(ScoreOutput {
        flops: ponder_search::traits::forward_flops(parameters, resp.tokens),
        scores: resp.candidates.into_iter().map(|c| c.scores).collect(),
        tokens: resp.tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generate_call_survives_the_wire_both_ways() {
        let req = GenRequest {
            prompt: "Q: 1+2\n".into(),
            n: 3,
            temperature: 0.8,
            top_p: 0.9,
            top_k: 5,
            max_tokens: 40,
            stop: vec!["\n".into()],
            seed: 7,
            affinity: 0,
            deadline: None,
            request_id: "r1".into(),
            tenant: 0,
        };
        assert_eq!(
            gen_request_from_pb(gen_request_to_pb(&req), "r1".into()).unwrap(),
            req
        );
        let out = GenOutput::new(
            vec![Sample {
                text: "1+2: 1+2=3 => 3".into(),
                tokens: 15,
                finish: Finish::Stop,
                stop: Some("\n".into()),
                logprob: -1.5,
            }],
            8,
            2,
            1000,
        );
        assert_eq!(out.flops, 2.0 * 1000.0 * (15.0 + 6.0));
        assert_eq!(gen_output_from_pb(gen_output_to_pb(out.clone()), 1000), out);
    }

    #[test]
    fn bad_wire_requests_say_what_to_fix() {
        let mut msg = pb::GenerateRequest::default();
        let e = gen_request_from_pb(msg.clone(), String::new()).unwrap_err();
        assert_eq!(
            e,
            SearchError::invalid("params is required (at least params.max_tokens)")
        );
        msg.params = Some(pb::SamplingParams::default());
        let e = gen_request_from_pb(msg, String::new()).unwrap_err();
        assert!(e.to_string().contains("max_tokens must be at least 1"));
        let score = pb::ScoreRequest {
            question: "1+1".into(),
            candidates: vec![pb::Candidate { steps: vec![] }],
        };
        let e = score_request_from_pb(score, String::new()).unwrap_err();
        assert!(e.to_string().contains("candidates[0] has no steps"));
        let e = score_output_from_pb(pb::ScoreResponse::default(), 2, 10).unwrap_err();
        assert!(matches!(e, SearchError::Internal(_)));
    }
}
