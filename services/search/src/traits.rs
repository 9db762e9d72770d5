//! The two capabilities every strategy is written against.
//!
//! `Generate` samples continuations of a prompt; `Score` returns a reward per step of
//! candidate solutions. Each output carries the compute it cost (tokens and FLOPs), so
//! the budget ledger can account for work without knowing where it ran.

use crate::error::Result;
use std::future::Future;
use std::time::Instant;

/// One generate call: `n` samples of a continuation of `prompt`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    pub prompt: String,
    pub n: u32,
    pub temperature: f32,
    pub top_p: f32,
    /// Sample only among the `top_k` most likely tokens (0: no limit).
    pub top_k: u32,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    /// Sample `i` draws from the stream `(seed, i)`: a retry elsewhere gives the same text.
    pub seed: u64,
    /// Routing hint: calls with the same key prefer the same node (its prefix cache).
    pub affinity: u64,
    /// The query's deadline; the call fails with `DeadlineExceeded` past it.
    pub deadline: Option<Instant>,
    /// Carried to the nodes for their logs.
    pub request_id: String,
    /// Whose query this serves (0: nobody in particular): workers take tenants in turn.
    pub tenant: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Eos,
    Length,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub text: String,
    pub tokens: u32,
    pub finish: Finish,
    /// The stop string that ended the sample (when `finish` is `Stop`).
    pub stop: Option<String>,
    pub logprob: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenOutput {
    pub samples: Vec<Sample>,
    pub prompt_tokens: u32,
    pub cached_prompt_tokens: u32,
    /// 2 x parameters x (uncached prompt tokens + sampled tokens).
    pub flops: f64,
}

/// The compute of running a model of `parameters` parameters over `tokens` tokens:
/// 2 x parameters x tokens, the one FLOPs definition every budget and report uses.
pub fn forward_flops(parameters: u64, tokens: u64) -> f64 {
    2.0 * parameters as f64 * tokens as f64
}

impl GenOutput {
    /// The output of one generate call on a model of `parameters` parameters; its FLOPs
    /// count the uncached prompt tokens and the sampled ones.
    pub fn new(
        samples: Vec<Sample>,
        prompt_tokens: u32,
        cached_prompt_tokens: u32,
        parameters: u64,
    ) -> Self {
        let sampled: u64 = samples.iter().map(|s| u64::from(s.tokens)).sum();
        let uncached = u64::from(prompt_tokens.saturating_sub(cached_prompt_tokens));
        Self {
            flops: forward_flops(parameters, sampled + uncached),
            samples,
            prompt_tokens,
            cached_prompt_tokens,
        }
    }
}

/// One candidate solution, split into steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRequest {
    pub question: String,
    pub candidates: Vec<Candidate>,
    pub deadline: Option<Instant>,
    pub affinity: u64,
    pub request_id: String,
    /// As [`GenRequest::tenant`].
    pub tenant: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOutput {
    /// Per candidate, one reward in [0, 1] per step.
    pub scores: Vec<Vec<f32>>,
    pub tokens: u64,
    pub flops: f64,
}

/// Facts a strategy needs to plan within a token budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratorLimits {
    /// A sampled token decodes to at most this many bytes.
    pub max_token_bytes: u32,
    /// Prompt plus sampled tokens must fit in this many tokens.
    pub context_length: u32,
    /// The most samples one generate call may ask for; the search splits larger calls.
    pub max_samples: u32,
    /// The model's parameters: a token it processes costs `2 x parameters` FLOPs
    /// ([`forward_flops`]); 0 when unknown (its FLOPs then count as 0).
    pub parameters: u64,
}

impl GeneratorLimits {
    /// Tokens that may still be sampled after `prompt` (a prompt has at most one
    /// token per byte, plus a BOS).
    pub fn room_after(&self, prompt: &str) -> u32 {
        self.context_length.saturating_sub(prompt.len() as u32 + 2)
    }

    /// The worst-case FLOPs of `n` samples of up to `max_tokens` tokens after
    /// `prompt`: every sampled token, plus the whole prompt (no prefix-cache hit) once
    /// per call the search splits the request into.
    pub fn flops_bound(&self, prompt: &str, n: u32, max_tokens: u32) -> f64 {
        let calls = u64::from(n.div_ceil(self.max_samples.max(1)));
        let prompt_tokens = prompt.len() as u64 + 2;
        forward_flops(
            self.parameters,
            u64::from(n) * u64::from(max_tokens) + calls * prompt_tokens,
        )
    }
}

/// The engine's `PrmCost`: scoring `question` with `steps` costs at most
/// `bytes(question) + prompt_overhead + sum(bytes(step) + step_overhead)` tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerifierCost {
    pub prompt_overhead: u64,
    pub step_overhead: u64,
    /// The PRM's parameters, as [`GeneratorLimits::parameters`].
    pub parameters: u64,
}

impl VerifierCost {
    pub fn bound(&self, question: &str, steps: &[String]) -> u64 {
        question.len() as u64
            + self.prompt_overhead
            + steps
                .iter()
                .map(|s| s.len() as u64 + self.step_overhead)
                .sum::<u64>()
    }

    /// The FLOPs of running the PRM over `tokens` tokens.
    pub fn flops(&self, tokens: u64) -> f64 {
        forward_flops(self.parameters, tokens)
    }
}

pub trait Generate: Send + Sync {
    fn generate(&self, req: GenRequest) -> impl Future<Output = Result<GenOutput>> + Send;
    fn limits(&self) -> GeneratorLimits;
}

pub trait Score: Send + Sync {
    fn score(&self, req: ScoreRequest) -> impl Future<Output = Result<ScoreOutput>> + Send;
    fn cost(&self) -> VerifierCost;
}

impl<T: Generate> Generate for std::sync::Arc<T> {
    fn generate(&self, req: GenRequest) -> impl Future<Output = Result<GenOutput>> + Send {
        (**self).generate(req)
    }
    fn limits(&self) -> GeneratorLimits {
        (**self).limits()
    }
}

impl<T: Score> Score for std::sync::Arc<T> {
    fn score(&self, req: ScoreRequest) -> impl Future<Output = Result<ScoreOutput>> + Send {
        (**self).score(req)
    }
    fn cost(&self) -> VerifierCost {
        (**self).cost()
    }
}
