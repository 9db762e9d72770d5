//! The model worker actor: one thread owns a model, its KV caches and its
//! prefix cache, and runs the batch loop; everyone else holds a cheap
//! [`ModelWorker`] handle and talks to it through a channel.
//!
//! Continuous batching: each loop iteration runs *one* packed forward pass that
//! holds the next token of every running sequence, the prompts of newly
//! admitted requests (prefill) and the candidates of scoring requests. So
//! sequences join and leave between decode steps, and `n` samples of one prompt
//! share one prefill and then decode together.
//!
//! Cancellation costs nothing extra: a request whose caller has gone away (its
//! reply channel is closed) is dropped at the top of the next iteration.
//!
//! Files: [`types`] (requests, responses, settings, counters), this file (the
//! handle), and the thread that owns the model in parts: `batch_loop.rs` (the loop and
//! its failure handling), `admission.rs`, `tenant_share.rs` (how much of a pass each
//! client gets), `scoring.rs` (scoring requests in parts), `packing.rs`, `readout.rs`,
//! `stop.rs`
//! (sampling and incremental stop-string detection) and `sequence.rs` (their types).

mod admission;
mod batch_loop;
mod ensemble;
mod fair_queue;
mod packing;
mod pool_choice;
mod readout;
mod scoring;
mod sequence;
mod stop;
mod tenant_share;
#[cfg(test)]
mod tests;
mod types;

pub use types::*;

use crate::engine::{LoadedModel, ModelInfo};
use crate::error::{EngineError, Result};
use crate::prm::Prm;
use crate::tokenizer::TextCodec;
use batch_loop::Worker;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Requests carry their tenant (whose query they serve): the waiting queue takes
/// tenants in turn ([`fair_queue`]).
enum Command {
    Generate(
        u64,
        GenerateRequest,
        Vec<u32>,
        oneshot::Sender<Result<GenerateResponse>>,
    ),
    Score(
        u64,
        Vec<sequence::EncodedCandidate>,
        oneshot::Sender<Result<ScoreResponse>>,
    ),
    Stats(oneshot::Sender<WorkerStats>),
}

/// Cheap, cloneable handle to a model worker thread.
#[derive(Clone)]
pub struct ModelWorker {
    tx: mpsc::UnboundedSender<Command>,
    outstanding: Arc<AtomicUsize>,
    max_queued: usize,
    max_samples: u32,
    max_batch_tokens: usize,
    info: Arc<ModelInfo>,
    threads: usize,
    /// The model's tokenizer and PRM encoding, shared with the model thread: requests
    /// are tokenised on the caller's task, so a long prompt never stalls the batch loop.
    codec: Arc<TextCodec>,
    prm: Option<Arc<Prm>>,
    /// A verifier ensemble's other members (`prm.json` `members`).
    ensemble: Option<Arc<ensemble::EnsembleWorkers>>,
    context: usize,
    input: InputCaps,
}

/// What one request may carry (the worker's configured caps).
#[derive(Debug, Clone, Copy)]
struct InputCaps {
    prompt_bytes: usize,
    stop_strings: usize,
    stop_bytes: usize,
}

/// Text longer than this is tokenised on a blocking thread rather than the caller's
/// async task.
const INLINE_ENCODE_BYTES: usize = 4096;

impl ModelWorker {
    /// Starts the worker thread. The model should already be warmed up.
    pub fn spawn(mut loaded: LoadedModel, config: WorkerConfig) -> Self {
        let ensemble = loaded
            .ensemble
            .take()
            .map(|e| Arc::new(ensemble::EnsembleWorkers::spawn(e, &config)));
        // Threads and pass size follow this model's own size (an ensemble's
        // `info.parameters` counts its members too).
        let own_parameters = loaded.model.config.num_parameters();
        let (tx, rx) = mpsc::unbounded_channel();
        let outstanding = Arc::new(AtomicUsize::new(0));
        let info = Arc::new(loaded.info.clone());
        let (codec, prm) = (loaded.codec.clone(), loaded.prm.clone());
        let context = loaded.model.rope.max_positions();
        let input = InputCaps {
            prompt_bytes: config.max_prompt_bytes.min(MAX_PROMPT_CHARS),
            stop_strings: config.max_stop_strings,
            stop_bytes: config.max_stop_bytes,
        };
        let max_samples = MAX_SAMPLES_PER_REQUEST.min(config.max_active_sequences as u32);
        let threads = config.threads_for(own_parameters);
        let config = WorkerConfig {
            max_batch_tokens: config.batch_tokens_for(own_parameters),
            ..config
        };
        let name = format!("model-worker-{}", info.id);
        let build_pool = |threads: usize, tag: &str| {
            let pool_name = format!("{name}{tag}");
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(move |i| format!("{pool_name}-{i}"))
                .build()
                .expect("building the worker's thread pool")
        };
        let pool = build_pool(threads, "");
        // A small model on one thread by default still gets every core for a pass with
        // many rows (a wide decode batch, a scoring batch), where splitting pays.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let wide =
            (config.threads == 0 && threads == 1 && cores > 1).then(|| build_pool(cores, "-wide"));
        let worker = Worker::new(loaded, config.clone(), rx, outstanding.clone(), wide);
        // The batch loop runs on a thread of the worker's own pool, so candle's
        // parallel operations start there. Called from any other thread, each one is
        // handed to the global pool and waited for: two thread switches per operation,
        // which cost a bundled model more than its arithmetic (docs/engine.md,
        // "Threads"). A panic outside a pass ends this thread, as before: the node then
        // reports NOT_SERVING.
        std::thread::Builder::new()
            .name(name)
            .spawn(move || pool.install(|| worker.run()))
            .expect("spawning a thread");
        Self {
            tx,
            outstanding,
            max_queued: config.max_queued_requests,
            max_samples,
            max_batch_tokens: config.max_batch_tokens,
            info,
            threads,
            codec,
            prm,
            ensemble,
            context,
            input,
        }
    }

    /// The most samples one generate request may ask for (the worker's batch limit).
    pub fn max_samples(&self) -> u32 {
        self.max_samples
    }

    /// New tokens per forward pass at most (resolved from the model's size when the
    /// configuration left it at 0).
    pub fn max_batch_tokens(&self) -> usize {
        self.max_batch_tokens
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Threads of the worker's compute pool ([`WorkerConfig::threads_for`]); under the
    /// default, a small model's wide passes also use every core.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Requests accepted and not yet answered.
    pub fn queue_depth(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    fn admit(&self) -> Result<OutstandingGuard> {
        let now = self.outstanding.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = OutstandingGuard(self.outstanding.clone());
        if now > self.max_queued {
            return Err(EngineError::Overloaded(format!(
                "{} requests already queued on this model (limit {})",
                now - 1,
                self.max_queued
            )));
        }
        Ok(guard)
    }

    pub async fn generate(&self, req: GenerateRequest) -> Result<GenerateResponse> {
        self.generate_for(0, req).await
    }

    /// [`ModelWorker::generate`] on behalf of `tenant` (an id of the client whose query
    /// this serves; 0: none): waiting requests are admitted tenant by tenant in turn.
    pub async fn generate_for(
        &self,
        tenant: u64,
        req: GenerateRequest,
    ) -> Result<GenerateResponse> {
        req.params.validate()?;
        if req.n == 0 || req.n > self.max_samples {
            return Err(EngineError::invalid(format!(
                "n must be in 1..={}, got {}",
                self.max_samples, req.n
            )));
        }
        self.check_prompt_bytes("prompt", req.prompt.len())?;
        let stops = &req.params.stop;
        let stop_bytes: usize = stops.iter().map(String::len).sum();
        if stops.len() > self.input.stop_strings || stop_bytes > self.input.stop_bytes {
            return Err(EngineError::invalid(format!(
                "{} stop strings of {stop_bytes} bytes in all; this worker takes at most {} \
                 stop strings of {} bytes in all",
                stops.len(),
                self.input.stop_strings,
                self.input.stop_bytes
            )));
        }
        let _guard = self.admit()?;
        let codec = self.codec.clone();
        let prompt = req.prompt.clone();
        let ids =
            off_the_model_thread(req.prompt.len(), move || codec.encode(&prompt, true)).await?;
        if ids.is_empty() {
            return Err(EngineError::invalid(
                "the prompt encodes to no tokens; send a non-empty prompt",
            ));
        }
        if ids.len() + req.params.max_tokens > self.context {
            return Err(EngineError::invalid(format!(
                "prompt ({} tokens) + max_tokens ({}) exceeds the model context of {} tokens",
                ids.len(),
                req.params.max_tokens,
                self.context
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Generate(tenant, req, ids, reply))
            .map_err(|_| EngineError::WorkerGone)?;
        rx.await.map_err(|_| EngineError::WorkerGone)?
    }

    pub async fn score(&self, req: ScoreRequest) -> Result<ScoreResponse> {
        self.score_for(0, req).await
    }

    /// [`ModelWorker::score`] on behalf of `tenant` (see [`ModelWorker::generate_for`]).
    pub async fn score_for(&self, tenant: u64, req: ScoreRequest) -> Result<ScoreResponse> {
        match &self.ensemble {
            None => self.score_own(tenant, req).await,
            Some(ensemble) => {
                let own = self.score_own(tenant, req.clone());
                ensemble.score(tenant, req, own).await
            }
        }
    }

    /// This worker's own model's scoring (for an ensemble, its unchained readings).
    async fn score_own(&self, tenant: u64, req: ScoreRequest) -> Result<ScoreResponse> {
        let Some(prm) = self.prm.clone() else {
            return Err(EngineError::invalid(
                "this model is not configured as a PRM (no prm.json)",
            ));
        };
        if req.candidates.is_empty() {
            return Err(EngineError::invalid("candidates must not be empty"));
        }
        if req.candidates.len() > MAX_SAMPLES_PER_REQUEST as usize {
            return Err(EngineError::invalid(format!(
                "at most {MAX_SAMPLES_PER_REQUEST} candidates per request, got {}",
                req.candidates.len()
            )));
        }
        let mut total = 0;
        for (i, steps) in req.candidates.iter().enumerate() {
            let bytes = req.question.len() + steps.iter().map(String::len).sum::<usize>();
            self.check_prompt_bytes(&format!("candidate {i} (question and steps)"), bytes)?;
            total += bytes;
        }
        let _guard = self.admit()?;
        let (codec, context) = (self.codec.clone(), self.context);
        let encoded = off_the_model_thread(total, move || {
            req.candidates
                .iter()
                .enumerate()
                .map(|(i, steps)| {
                    let (ids, tags) = prm
                        .encode(&codec, &req.question, steps)
                        .map_err(|e| EngineError::invalid(format!("candidate {i}: {e}")))?;
                    if ids.len() > context {
                        return Err(EngineError::invalid(format!(
                            "candidate {i} is {} tokens; the PRM's context is {context}",
                            ids.len()
                        )));
                    }
                    if tags.is_empty() {
                        return Err(EngineError::invalid(format!("candidate {i} has no steps")));
                    }
                    Ok((ids, tags))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Score(tenant, encoded, reply))
            .map_err(|_| EngineError::WorkerGone)?;
        rx.await.map_err(|_| EngineError::WorkerGone)?
    }

    fn check_prompt_bytes(&self, what: &str, bytes: usize) -> Result<()> {
        if bytes > self.input.prompt_bytes {
            return Err(EngineError::invalid(format!(
                "{what} has {bytes} bytes; this worker takes at most {}",
                self.input.prompt_bytes
            )));
        }
        Ok(())
    }

    pub async fn stats(&self) -> Result<WorkerStats> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Stats(reply))
            .map_err(|_| EngineError::WorkerGone)?;
        rx.await.map_err(|_| EngineError::WorkerGone)
    }
}

/// Runs `encode` (tokenising `bytes` of text) on the caller's task when the text is
/// short, else on tokio's blocking pool, so that neither the model thread nor an async
/// worker thread is held by a long prompt.
async fn off_the_model_thread<T: Send + 'static>(
    bytes: usize,
    encode: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    if bytes <= INLINE_ENCODE_BYTES {
        return encode();
    }
    tokio::task::spawn_blocking(encode)
        .await
        .map_err(|e| EngineError::Internal(format!("tokenising failed: {e}")))?
}

/// Decrements the outstanding count when a request is answered or abandoned.
struct OutstandingGuard(Arc<AtomicUsize>);
impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
