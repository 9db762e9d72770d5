//! The engine's types as the search traits' types: the one place the two meet.
//!
//! The engine and the strategies know nothing of each other (docs/architecture.md);
//! the in-process adapters ([`crate::local`]) and therefore the worker nodes convert
//! through these functions, and the wire conversions live in `ponder_cluster::wire`.

use ponder_engine::{Completion, EngineError, FinishReason, SamplingParams};
use ponder_search::{Finish, GenRequest, Sample, SearchError};

/// The sampling parameters of a generate call.
pub fn sampling_params(req: &GenRequest) -> SamplingParams {
    SamplingParams {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k as usize,
        max_tokens: req.max_tokens as usize,
        stop: req.stop.clone(),
        seed: req.seed,
        ignore_eos: false,
    }
}

pub fn finish(r: FinishReason) -> Finish {
    match r {
        FinishReason::Stop => Finish::Stop,
        FinishReason::Eos => Finish::Eos,
        FinishReason::Length => Finish::Length,
    }
}

pub fn sample(c: Completion) -> Sample {
    Sample {
        text: c.text,
        tokens: c.tokens,
        finish: finish(c.finish_reason),
        stop: c.stop,
        logprob: c.logprob,
    }
}

/// How an engine failure reads to a strategy (and, through `ponder_cluster::status`,
/// to a gRPC client).
pub fn search_error(e: EngineError) -> SearchError {
    match e {
        EngineError::InvalidRequest(m) => SearchError::Invalid(m),
        EngineError::Overloaded(m) => SearchError::Overloaded(m),
        EngineError::WorkerGone => SearchError::Unavailable("the model worker has stopped".into()),
        other => SearchError::Internal(other.to_string()),
    }
}
