//! [`Generate`] and [`Score`] in-process, over the engine's model workers.
//!
//! Used by tests, offline evaluation (`ponder eval`) and the generator and verifier
//! nodes themselves, which serve exactly these calls over gRPC.

use crate::convert::{sample, sampling_params, search_error};
use ponder_engine::ModelWorker;
use ponder_search::traits::{forward_flops, GeneratorLimits, VerifierCost};
use ponder_search::{
    GenOutput, GenRequest, Generate, Result, Score, ScoreOutput, ScoreRequest, SearchError,
};
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
        let cost = VerifierCost {
            prompt_overhead: c.prompt_overhead,
            step_overhead: c.step_overhead,
            parameters: worker.info().parameters,
        };
        Ok(Self { worker, cost })
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

impl Generate for LocalGenerator {
    async fn generate(&self, req: GenRequest) -> Result<GenOutput> {
        let request = ponder_engine::GenerateRequest {
            params: sampling_params(&req),
            prompt: req.prompt,
            n: req.n,
        };
        let out = with_deadline(req.deadline, async {
            self.worker
                .generate_for(req.tenant, request)
                .await
                .map_err(search_error)
        })
        .await?;
        Ok(GenOutput::new(
            out.completions.into_iter().map(sample).collect(),
            out.prompt_tokens,
            out.cached_prompt_tokens,
            self.worker.info().parameters,
        ))
    }

    fn limits(&self) -> GeneratorLimits {
        GeneratorLimits {
            max_token_bytes: self.worker.info().max_token_bytes as u32,
            context_length: self.worker.info().context_length as u32,
            max_samples: self.worker.max_samples(),
            parameters: self.worker.info().parameters,
        }
    }
}

impl Score for LocalVerifier {
    async fn score(&self, req: ScoreRequest) -> Result<ScoreOutput> {
        let request = ponder_engine::ScoreRequest {
            question: req.question,
            candidates: req.candidates.into_iter().map(|c| c.steps).collect(),
        };
        let out = with_deadline(req.deadline, async {
            self.worker
                .score_for(req.tenant, request)
                .await
                .map_err(search_error)
        })
        .await?;
        Ok(ScoreOutput {
            flops: forward_flops(self.worker.info().parameters, out.tokens as u64),
            scores: out.scores,
            tokens: out.tokens as u64,
        })
    }

    fn cost(&self) -> VerifierCost {
        self.cost
    }
}
