//! [`Generate`] and [`Score`] in-process, over the engine's model workers.
//!
//! Used by tests, offline evaluation and the generator/verifier services themselves
//! (which wrap exactly these calls in gRPC).

use crate::error::{Result, SearchError};
use crate::traits::{
    Finish, GenOutput, GenRequest, Generate, GeneratorLimits, Sample, Score, ScoreOutput,
    ScoreRequest, VerifierCost,
};
use ponder_engine::{FinishReason, ModelWorker, SamplingParams};
use std::future::Future;
use std::time::Instant;

/// A generator model worker in this process.
#[derive(Clone)]
pub struct LocalGenerator {
    worker: ModelWorker,
}

impl LocalGenerator {
    pub fn new(worker: ModelWorker) -> Self {
        Self { worker }
    }

    pub fn worker(&self) -> &ModelWorker {
        &self.worker
    }
}

/// A PRM model worker in this process.
#[derive(Clone)]
pub struct LocalVerifier {
    worker: ModelWorker,
    cost: VerifierCost,
}

impl LocalVerifier {
    /// Fails if the model was not loaded as a PRM.
    pub fn new(worker: ModelWorker) -> Result<Self> {
        let c = worker.info().prm_cost.ok_or_else(|| {
            SearchError::invalid(format!(
                "model {} is not a PRM (it has no prm.json)",
                worker.info().id
            ))
        })?;
        Ok(Self {
            worker,
            cost: VerifierCost {
                prompt_overhead: c.prompt_overhead,
                step_overhead: c.step_overhead,
            },
        })
    }

    pub fn worker(&self) -> &ModelWorker {
        &self.worker
    }
}

/// Runs `fut` until `deadline`.
pub async fn with_deadline<T>(
    deadline: Option<Instant>,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match deadline {
        None => fut.await,
        Some(d) => tokio::time::timeout_at(d.into(), fut)
            .await
            .map_err(|_| SearchError::DeadlineExceeded("the query's deadline passed".into()))?,
    }
}

/// Converts an engine finish reason.
pub fn finish(r: FinishReason) -> Finish {
    match r {
        FinishReason::Stop => Finish::Stop,
        FinishReason::Eos => Finish::Eos,
        FinishReason::Length => Finish::Length,
    }
}

impl Generate for LocalGenerator {
    async fn generate(&self, req: GenRequest) -> Result<GenOutput> {
        let params = SamplingParams {
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: 0,
            max_tokens: req.max_tokens as usize,
            stop: req.stop,
            seed: req.seed,
            ignore_eos: false,
        };
        let out = with_deadline(req.deadline, async {
            Ok(self
                .worker
                .generate(ponder_engine::GenerateRequest {
                    prompt: req.prompt,
                    n: req.n,
                    params,
                })
                .await?)
        })
        .await?;
        let sampled: u64 = out.completions.iter().map(|c| c.tokens as u64).sum();
        let uncached = (out.prompt_tokens - out.cached_prompt_tokens) as u64;
        Ok(GenOutput {
            flops: 2.0 * self.worker.info().parameters as f64 * (sampled + uncached) as f64,
            samples: out
                .completions
                .into_iter()
                .map(|c| Sample {
                    text: c.text,
                    tokens: c.tokens,
                    finish: finish(c.finish_reason),
                    logprob: c.logprob,
                })
                .collect(),
            prompt_tokens: out.prompt_tokens,
            cached_prompt_tokens: out.cached_prompt_tokens,
        })
    }

    fn limits(&self) -> GeneratorLimits {
        GeneratorLimits {
            max_token_bytes: self.worker.info().max_token_bytes as u32,
            context_length: self.worker.info().context_length as u32,
        }
    }
}

impl Score for LocalVerifier {
    async fn score(&self, req: ScoreRequest) -> Result<ScoreOutput> {
        let out = with_deadline(req.deadline, async {
            Ok(self
                .worker
                .score(ponder_engine::ScoreRequest {
                    question: req.question,
                    candidates: req.candidates.into_iter().map(|c| c.steps).collect(),
                })
                .await?)
        })
        .await?;
        Ok(ScoreOutput {
            flops: 2.0 * self.worker.info().parameters as f64 * out.tokens as f64,
            scores: out.scores,
            tokens: out.tokens as u64,
        })
    }

    fn cost(&self) -> VerifierCost {
        self.cost
    }
}
