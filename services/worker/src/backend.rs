//! What a worker node answers with: the engine's model worker (`candle`, the default)
//! or a recording of one (`recorded`, for scale measurements: docs/scaling.md), and,
//! when the node was started with `--record-calls`, the recorder that keeps its
//! answers. The services call [`Backend`] through the two capabilities and never ask
//! which engine is behind it; ModelInfo, metrics and logs say it.

use crate::local::{LocalGenerator, LocalVerifier};
use crate::recorded::recorder::Recorder;
use crate::recorded::store::RecordedInfo;
use crate::recorded::{RecordedWorker, ENGINE_NAME};
use ponder_engine::{ModelInfo, ModelWorker, WorkerStats};
use ponder_proto::v1 as pb;
use ponder_search::traits::{GeneratorLimits, VerifierCost};
use ponder_search::{
    GenOutput, GenRequest, Generate, Result, Score, ScoreOutput, ScoreRequest, SearchError,
};

/// The engine name of a node serving a real model.
pub const CANDLE_ENGINE: &str = "candle";

#[derive(Clone)]
pub enum Engine {
    Candle(ModelWorker),
    Recorded(RecordedWorker),
}

#[derive(Clone)]
pub struct Backend {
    engine: Engine,
    recorder: Option<Recorder>,
}

impl Backend {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            recorder: None,
        }
    }

    /// Keeps every answer in `recorder` as well.
    pub fn recording(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// `candle` or `recorded`, as ModelInfo.engine reports it.
    pub fn engine_name(&self) -> &'static str {
        match self.engine {
            Engine::Candle(_) => CANDLE_ENGINE,
            Engine::Recorded(_) => ENGINE_NAME,
        }
    }

    /// The engine's model worker (none on a recorded node).
    pub fn model_worker(&self) -> Option<&ModelWorker> {
        match &self.engine {
            Engine::Candle(w) => Some(w),
            Engine::Recorded(_) => None,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        match &self.engine {
            Engine::Candle(w) => w.info(),
            Engine::Recorded(r) => r.info(),
        }
    }

    pub fn max_samples(&self) -> u32 {
        match &self.engine {
            Engine::Candle(w) => w.max_samples(),
            Engine::Recorded(r) => r.max_samples(),
        }
    }

    /// Requests accepted and not yet answered.
    pub fn queue_depth(&self) -> usize {
        match &self.engine {
            Engine::Candle(w) => w.queue_depth(),
            Engine::Recorded(r) => r.queue_depth(),
        }
    }

    /// Calls a recorded node refused for want of a recorded answer (0 on the engine).
    pub fn misses(&self) -> u64 {
        match &self.engine {
            Engine::Candle(_) => 0,
            Engine::Recorded(r) => r.misses(),
        }
    }

    /// The worker's counters; an error once its loop has stopped.
    pub async fn stats(&self) -> Result<WorkerStats> {
        match &self.engine {
            Engine::Candle(w) => w
                .stats()
                .await
                .map_err(|_| SearchError::Unavailable("the model worker has stopped".into())),
            Engine::Recorded(r) => r.stats().await,
        }
    }

    /// What ModelInfo answers for this backend on node `instance_id`: the model's
    /// description, its PRM costs on a verifier, and on a generator how many samples one
    /// call may ask for (a verifier says 0). A recording stores the same
    /// ([`Backend::recorded_info`]), so a recorded node answers as the real one did.
    pub fn model_info(&self, instance_id: &str) -> pb::ModelInfoResponse {
        let info = self.info();
        let cost = info.prm_cost;
        pb::ModelInfoResponse {
            model_id: info.id.clone(),
            architecture: info.architecture.clone(),
            format: info.format.clone(),
            dtype: info.dtype.clone(),
            parameters: info.parameters,
            vocab_size: info.vocab_size as u32,
            context_length: info.context_length as u32,
            prm: info.prm.clone().unwrap_or_default(),
            max_token_bytes: info.max_token_bytes as u32,
            instance_id: instance_id.to_string(),
            prm_prompt_overhead: cost.map_or(0, |c| c.prompt_overhead),
            prm_step_overhead: cost.map_or(0, |c| c.step_overhead),
            max_samples_per_request: if info.prm.is_some() {
                0
            } else {
                self.max_samples()
            },
            engine: self.engine_name().to_string(),
            kv_cache_dtype: info.kv_cache.clone(),
        }
    }

    /// What `--record-calls` writes as the recording's `info.json`: [`Backend::model_info`]
    /// without what belongs to the node (its instance id, its engine).
    pub fn recorded_info(&self, role: &str) -> RecordedInfo {
        let i = self.model_info("");
        RecordedInfo {
            role: role.to_string(),
            model_id: i.model_id,
            architecture: i.architecture,
            format: i.format,
            dtype: i.dtype,
            parameters: i.parameters,
            vocab_size: i.vocab_size,
            context_length: i.context_length,
            prm: i.prm,
            max_token_bytes: i.max_token_bytes,
            prm_prompt_overhead: i.prm_prompt_overhead,
            prm_step_overhead: i.prm_step_overhead,
            max_samples_per_request: i.max_samples_per_request,
        }
    }
}

impl Generate for Backend {
    async fn generate(&self, req: GenRequest) -> Result<GenOutput> {
        let kept = self.recorder.as_ref().map(|_| req.clone());
        let out = match &self.engine {
            Engine::Candle(w) => LocalGenerator::new(w.clone()).generate(req).await?,
            Engine::Recorded(r) => r.generate(req).await?,
        };
        if let (Some(recorder), Some(req)) = (&self.recorder, kept) {
            recorder.generated(&req, &out);
        }
        Ok(out)
    }

    fn limits(&self) -> GeneratorLimits {
        match &self.engine {
            Engine::Candle(w) => LocalGenerator::new(w.clone()).limits(),
            Engine::Recorded(r) => r.limits(),
        }
    }
}

impl Score for Backend {
    async fn score(&self, req: ScoreRequest) -> Result<ScoreOutput> {
        let kept = self.recorder.as_ref().map(|_| req.clone());
        let cost = self.cost();
        let out = match &self.engine {
            Engine::Candle(w) => LocalVerifier::new(w.clone())?.score(req).await?,
            Engine::Recorded(r) => r.score(req).await?,
        };
        if let (Some(recorder), Some(req)) = (&self.recorder, kept) {
            recorder.scored(&req, &out, &cost);
        }
        Ok(out)
    }

    fn cost(&self) -> VerifierCost {
        verifier_cost(self.info())
    }
}

/// What scoring costs on a model described by `info` (overheads of 0 on a model that
/// is not a PRM).
pub fn verifier_cost(info: &ModelInfo) -> VerifierCost {
    let c = info.prm_cost.unwrap_or(ponder_engine::prm::PrmCost {
        prompt_overhead: 0,
        step_overhead: 0,
    });
    VerifierCost {
        prompt_overhead: c.prompt_overhead,
        step_overhead: c.step_overhead,
        parameters: info.parameters,
    }
}
