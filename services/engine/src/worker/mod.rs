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
//! its failure handling), `admission.rs`, `packing.rs`, `readout.rs`, `stop.rs`
//! (sampling and incremental stop-string detection) and `sequence.rs` (their types).

mod admission;
mod batch_loop;
mod packing;
mod readout;
mod sequence;
mod stop;
#[cfg(test)]
mod tests;
mod types;

pub use types::*;

use crate::engine::{LoadedModel, ModelInfo};
use crate::error::{EngineError, Result};
use batch_loop::Worker;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

enum Command {
    Generate(GenerateRequest, oneshot::Sender<Result<GenerateResponse>>),
    Score(ScoreRequest, oneshot::Sender<Result<ScoreResponse>>),
    Stats(oneshot::Sender<WorkerStats>),
}

/// Cheap, cloneable handle to a model worker thread.
#[derive(Clone)]
pub struct ModelWorker {
    tx: mpsc::UnboundedSender<Command>,
    outstanding: Arc<AtomicUsize>,
    max_queued: usize,
    max_samples: u32,
    info: Arc<ModelInfo>,
    threads: usize,
}

impl ModelWorker {
    /// Starts the worker thread. The model should already be warmed up.
    pub fn spawn(loaded: LoadedModel, config: WorkerConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let outstanding = Arc::new(AtomicUsize::new(0));
        let info = Arc::new(loaded.info.clone());
        let max_samples = MAX_SAMPLES_PER_REQUEST.min(config.max_active_sequences as u32);
        let threads = config.threads_for(info.parameters);
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
            info,
            threads,
        }
    }

    /// The most samples one generate request may ask for (the worker's batch limit).
    pub fn max_samples(&self) -> u32 {
        self.max_samples
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
        req.params.validate()?;
        if req.n == 0 || req.n > self.max_samples {
            return Err(EngineError::invalid(format!(
                "n must be in 1..={}, got {}",
                self.max_samples, req.n
            )));
        }
        if req.prompt.len() > MAX_PROMPT_CHARS {
            return Err(EngineError::invalid(format!(
                "prompt has {} characters; the limit is {MAX_PROMPT_CHARS}",
                req.prompt.len()
            )));
        }
        let _guard = self.admit()?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Generate(req, reply))
            .map_err(|_| EngineError::WorkerGone)?;
        rx.await.map_err(|_| EngineError::WorkerGone)?
    }

    pub async fn score(&self, req: ScoreRequest) -> Result<ScoreResponse> {
        if self.info.prm.is_none() {
            return Err(EngineError::invalid(
                "this model is not configured as a PRM (no prm.json)",
            ));
        }
        if req.candidates.is_empty() {
            return Err(EngineError::invalid("candidates must not be empty"));
        }
        if req.candidates.len() > MAX_SAMPLES_PER_REQUEST as usize {
            return Err(EngineError::invalid(format!(
                "at most {MAX_SAMPLES_PER_REQUEST} candidates per request, got {}",
                req.candidates.len()
            )));
        }
        let _guard = self.admit()?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Score(req, reply))
            .map_err(|_| EngineError::WorkerGone)?;
        rx.await.map_err(|_| EngineError::WorkerGone)?
    }

    pub async fn stats(&self) -> Result<WorkerStats> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Stats(reply))
            .map_err(|_| EngineError::WorkerGone)?;
        rx.await.map_err(|_| EngineError::WorkerGone)
    }
}

/// Decrements the outstanding count when a request is answered or abandoned.
struct OutstandingGuard(Arc<AtomicUsize>);
impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
