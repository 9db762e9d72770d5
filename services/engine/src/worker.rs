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

use crate::engine::{LoadedModel, ModelInfo};
use crate::error::{EngineError, Result};
use crate::kv::KvCache;
use crate::model::Segment;
use crate::prefix_cache::{PrefixCache, PrefixCacheStats};
use crate::sampling::{find_stop, sample, sequence_rng, FinishReason, SamplingParams};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most samples one generate request may ask for.
pub const MAX_SAMPLES_PER_REQUEST: u32 = 256;
/// Longest prompt accepted, in characters (the token limit is the model's context).
pub const MAX_PROMPT_CHARS: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub prompt: String,
    pub n: u32,
    pub params: SamplingParams,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Sample index within the request (0..n); with the seed it identifies the RNG stream.
    pub index: u32,
    pub text: String,
    /// Tokens generated, including a stop or EOS token.
    pub tokens: u32,
    /// Their ids, in order.
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    /// The stop string that ended the text, when `finish_reason` is `Stop`.
    pub stop: Option<String>,
    /// Sum of log-probabilities of the generated tokens under the model.
    pub logprob: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateResponse {
    pub completions: Vec<Completion>,
    pub prompt_tokens: u32,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_prompt_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRequest {
    pub question: String,
    /// Each candidate solution as its list of steps.
    pub candidates: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreResponse {
    /// Per candidate, one score in [0, 1] per step.
    pub scores: Vec<Vec<f32>>,
    /// Tokens run through the PRM (cached prefix tokens excluded).
    pub tokens: u32,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Requests accepted but not finished; beyond it submissions fail with `Overloaded`.
    pub max_queued_requests: usize,
    /// Sequences decoding at once.
    pub max_active_sequences: usize,
    /// New tokens per forward pass (at least one waiting request is always admitted).
    pub max_batch_tokens: usize,
    pub prefix_cache_entries: usize,
    pub prefix_cache_tokens: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            max_queued_requests: 256,
            max_active_sequences: 256,
            max_batch_tokens: 2048,
            prefix_cache_entries: 64,
            prefix_cache_tokens: 32_768,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerStats {
    pub forward_passes: u64,
    /// Forward passes that decoded at least one running sequence.
    pub decode_steps: u64,
    /// Sum over decode steps of the sequences decoded (mean batch = this / decode_steps).
    pub decoded_sequences: u64,
    pub max_decode_batch: usize,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub scored_tokens: u64,
    pub completed_requests: u64,
    pub cancelled_requests: u64,
    pub failed_requests: u64,
    pub queued_requests: usize,
    pub active_sequences: usize,
    pub prefix_cache: PrefixCacheStats,
}

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
}

impl ModelWorker {
    /// Starts the worker thread. The model should already be warmed up.
    pub fn spawn(loaded: LoadedModel, config: WorkerConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let outstanding = Arc::new(AtomicUsize::new(0));
        let info = Arc::new(loaded.info.clone());
        let max_samples = MAX_SAMPLES_PER_REQUEST.min(config.max_active_sequences as u32);
        let worker = Worker {
            cache: PrefixCache::new(config.prefix_cache_entries, config.prefix_cache_tokens),
            loaded,
            config: config.clone(),
            rx,
            waiting: VecDeque::new(),
            running: Vec::new(),
            stats: WorkerStats::default(),
            outstanding: outstanding.clone(),
        };
        std::thread::Builder::new()
            .name(format!("model-worker-{}", info.id))
            .spawn(move || worker.run())
            .expect("spawning a thread");
        Self {
            tx,
            outstanding,
            max_queued: config.max_queued_requests,
            max_samples,
            info,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
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

/// One sampled sequence of a running request.
struct Sequence {
    index: u32,
    rng: ChaCha8Rng,
    cache: KvCache,
    generated: Vec<u32>,
    /// Sampled but not yet fed through the model.
    next: u32,
    logprob: f64,
    done: Option<Completion>,
}

struct Running {
    params: SamplingParams,
    prompt: Arc<Vec<u32>>,
    cached_prompt_tokens: usize,
    seqs: Vec<Sequence>,
    reply: oneshot::Sender<Result<GenerateResponse>>,
}

struct Prefill {
    req: GenerateRequest,
    ids: Arc<Vec<u32>>,
    reused: usize,
    cache: KvCache,
    reply: oneshot::Sender<Result<GenerateResponse>>,
}

struct Scoring {
    inputs: Vec<(Vec<u32>, Vec<usize>, usize, KvCache)>,
    reply: oneshot::Sender<Result<ScoreResponse>>,
}

enum Waiting {
    Generate(GenerateRequest, oneshot::Sender<Result<GenerateResponse>>),
    Score(ScoreRequest, oneshot::Sender<Result<ScoreResponse>>),
}

impl Waiting {
    fn is_cancelled(&self) -> bool {
        match self {
            Waiting::Generate(_, r) => r.is_closed(),
            Waiting::Score(_, r) => r.is_closed(),
        }
    }
}

/// Which segment of the packed pass a row range belongs to.
enum Use {
    Decode(usize, usize),
    Prefill(usize),
    Score(usize, usize),
}

struct Worker {
    loaded: LoadedModel,
    config: WorkerConfig,
    cache: PrefixCache,
    rx: mpsc::UnboundedReceiver<Command>,
    waiting: VecDeque<Waiting>,
    running: Vec<Running>,
    stats: WorkerStats,
    outstanding: Arc<AtomicUsize>,
}

impl Worker {
    fn run(mut self) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match self.rx.blocking_recv() {
                    Some(cmd) => self.accept(cmd),
                    None => return,
                }
            }
            while let Ok(cmd) = self.rx.try_recv() {
                self.accept(cmd);
            }
            self.drop_cancelled();
            self.step();
        }
    }

    fn accept(&mut self, cmd: Command) {
        match cmd {
            Command::Generate(req, reply) => self.waiting.push_back(Waiting::Generate(req, reply)),
            Command::Score(req, reply) => self.waiting.push_back(Waiting::Score(req, reply)),
            Command::Stats(reply) => {
                let mut stats = self.stats.clone();
                stats.queued_requests = self.outstanding.load(Ordering::Relaxed);
                stats.active_sequences = self.running.iter().map(|r| r.live()).sum();
                stats.prefix_cache = self.cache.stats();
                let _ = reply.send(stats);
            }
        }
    }

    fn drop_cancelled(&mut self) {
        let before = self.running.len() + self.waiting.len();
        self.running.retain(|r| !r.reply.is_closed());
        self.waiting.retain(|w| !w.is_cancelled());
        self.stats.cancelled_requests += (before - self.running.len() - self.waiting.len()) as u64;
    }

    fn active_sequences(&self) -> usize {
        self.running.iter().map(Running::live).sum()
    }

    /// Moves waiting requests into this pass while the token and sequence budgets allow.
    fn admit(&mut self, decode_rows: usize) -> (Vec<Prefill>, Vec<Scoring>) {
        let mut prefills = Vec::new();
        let mut scorings = Vec::new();
        let mut tokens = decode_rows;
        let mut seqs = self.active_sequences();
        while let Some(next) = self.waiting.front() {
            let admitted_any = !prefills.is_empty() || !scorings.is_empty() || decode_rows > 0;
            if let Waiting::Generate(req, _) = next {
                if admitted_any && seqs + req.n as usize > self.config.max_active_sequences {
                    break;
                }
            }
            let Some(next) = self.waiting.pop_front() else {
                break;
            };
            match next {
                Waiting::Generate(req, reply) => match self.prepare_prefill(&req) {
                    Ok((ids, reused, cache)) => {
                        tokens += ids.len() - reused;
                        seqs += req.n as usize;
                        prefills.push(Prefill {
                            req,
                            ids: Arc::new(ids),
                            reused,
                            cache,
                            reply,
                        });
                    }
                    Err(e) => {
                        self.stats.failed_requests += 1;
                        let _ = reply.send(Err(e));
                    }
                },
                Waiting::Score(req, reply) => match self.prepare_scoring(&req) {
                    Ok(inputs) => {
                        tokens += inputs
                            .iter()
                            .map(|(ids, _, reused, _)| ids.len() - reused)
                            .sum::<usize>();
                        scorings.push(Scoring { inputs, reply });
                    }
                    Err(e) => {
                        self.stats.failed_requests += 1;
                        let _ = reply.send(Err(e));
                    }
                },
            }
            if tokens >= self.config.max_batch_tokens {
                break;
            }
        }
        (prefills, scorings)
    }

    fn prepare_prefill(&mut self, req: &GenerateRequest) -> Result<(Vec<u32>, usize, KvCache)> {
        let ids = self.loaded.codec.encode(&req.prompt, true)?;
        if ids.is_empty() {
            return Err(EngineError::invalid(
                "the prompt encodes to no tokens; send a non-empty prompt",
            ));
        }
        let context = self.loaded.model.rope.max_positions();
        if ids.len() + req.params.max_tokens > context {
            return Err(EngineError::invalid(format!(
                "prompt ({} tokens) + max_tokens ({}) exceeds the model context of {context} tokens",
                ids.len(),
                req.params.max_tokens
            )));
        }
        let cache = self
            .cache
            .lookup(&ids)
            .unwrap_or_else(|| KvCache::new(self.loaded.model.config.num_layers));
        Ok((ids, cache.len(), cache))
    }

    #[allow(clippy::type_complexity)]
    fn prepare_scoring(
        &mut self,
        req: &ScoreRequest,
    ) -> Result<Vec<(Vec<u32>, Vec<usize>, usize, KvCache)>> {
        let prm = self
            .loaded
            .prm
            .as_ref()
            .ok_or_else(|| EngineError::invalid("this model is not a PRM"))?;
        let context = self.loaded.model.rope.max_positions();
        let mut inputs = Vec::with_capacity(req.candidates.len());
        for (i, steps) in req.candidates.iter().enumerate() {
            let (ids, tags) = prm
                .encode(&self.loaded.codec, &req.question, steps)
                .map_err(|e| EngineError::invalid(format!("candidate {i}: {e}")))?;
            if ids.len() > context {
                return Err(EngineError::invalid(format!(
                    "candidate {i} is {} tokens; the PRM's context is {context}",
                    ids.len()
                )));
            }
            // Reuse only what precedes the first tag: tag rows must be computed.
            let first_tag = tags[0];
            let cache = self
                .cache
                .lookup(&ids[..first_tag + 1])
                .unwrap_or_else(|| KvCache::new(self.loaded.model.config.num_layers));
            let reused = cache.len();
            inputs.push((ids, tags, reused, cache));
        }
        Ok(inputs)
    }

    /// One packed forward pass over decodes, prefills and scorings, then bookkeeping.
    fn step(&mut self) {
        let decode_rows = self.active_sequences();
        let (mut prefills, mut scorings) = self.admit(decode_rows);
        if decode_rows == 0 && prefills.is_empty() && scorings.is_empty() {
            return;
        }
        let mut uses = Vec::new();
        let hidden = {
            let mut segments = Vec::new();
            for (ri, run) in self.running.iter_mut().enumerate() {
                for (si, seq) in run.seqs.iter_mut().enumerate() {
                    if seq.done.is_none() {
                        segments.push(Segment {
                            tokens: std::slice::from_ref(&seq.next),
                            cache: &mut seq.cache,
                        });
                        uses.push(Use::Decode(ri, si));
                    }
                }
            }
            for (pi, p) in prefills.iter_mut().enumerate() {
                segments.push(Segment {
                    tokens: &p.ids[p.reused..],
                    cache: &mut p.cache,
                });
                uses.push(Use::Prefill(pi));
            }
            for (ji, job) in scorings.iter_mut().enumerate() {
                for (ci, (ids, _, reused, cache)) in job.inputs.iter_mut().enumerate() {
                    segments.push(Segment {
                        tokens: &ids[*reused..],
                        cache,
                    });
                    uses.push(Use::Score(ji, ci));
                }
            }
            let lens: Vec<usize> = segments.iter().map(|s| s.tokens.len()).collect();
            self.loaded.model.forward(&mut segments).map(|h| (h, lens))
        };
        self.stats.forward_passes += 1;
        let outputs = hidden
            .map_err(EngineError::from)
            .and_then(|(hidden, lens)| self.read_outputs(&hidden, &lens, &uses, &scorings));
        match outputs {
            Ok((logits, scores)) => self.apply(&uses, logits, scores, prefills, scorings),
            Err(e) => {
                // A failed pass fails everything that was in it; the worker carries on.
                tracing::error!(error = %e, "forward pass failed");
                let msg = e.to_string();
                let failed = self.running.len() + prefills.len() + scorings.len();
                self.stats.failed_requests += failed as u64;
                for run in self.running.drain(..) {
                    let _ = run.reply.send(Err(EngineError::invalid(msg.clone())));
                }
                for p in prefills {
                    let _ = p.reply.send(Err(EngineError::invalid(msg.clone())));
                }
                for s in scorings {
                    let _ = s.reply.send(Err(EngineError::invalid(msg.clone())));
                }
            }
        }
    }

    /// Logits for the last new row of every decode/prefill segment, and PRM
    /// scores for every tag row of every scoring segment.
    fn read_outputs(
        &self,
        hidden: &Tensor,
        lens: &[usize],
        uses: &[Use],
        scorings: &[Scoring],
    ) -> Result<(Vec<Vec<f32>>, Vec<f32>)> {
        let mut gen_rows = Vec::new();
        let mut score_rows = Vec::new();
        let mut offset = 0;
        for (u, len) in uses.iter().zip(lens) {
            match u {
                Use::Decode(..) | Use::Prefill(..) => gen_rows.push((offset + len - 1) as u32),
                Use::Score(ji, ci) => {
                    let (_, tags, reused, _) = &scorings[*ji].inputs[*ci];
                    score_rows.extend(tags.iter().map(|t| (offset + t - reused) as u32));
                }
            }
            offset += len;
        }
        let device = hidden.device();
        let logits = if gen_rows.is_empty() {
            vec![]
        } else {
            let rows = hidden.index_select(&Tensor::new(gen_rows.as_slice(), device)?, 0)?;
            self.loaded.model.logits(&rows)?.to_vec2::<f32>()?
        };
        let scores = if score_rows.is_empty() {
            vec![]
        } else {
            let rows = hidden.index_select(&Tensor::new(score_rows.as_slice(), device)?, 0)?;
            let prm = self
                .loaded
                .prm
                .as_ref()
                .expect("scoring admitted only for PRMs");
            prm.score_rows(&self.loaded.model, &rows)?
        };
        Ok((logits, scores))
    }

    /// Samples, starts newly prefilled requests, answers scorings and finished requests.
    fn apply(
        &mut self,
        uses: &[Use],
        logits: Vec<Vec<f32>>,
        scores: Vec<f32>,
        prefills: Vec<Prefill>,
        scorings: Vec<Scoring>,
    ) {
        let mut logits = logits.into_iter();
        let decode_count = uses.iter().filter(|u| matches!(u, Use::Decode(..))).count();
        if decode_count > 0 {
            self.stats.decode_steps += 1;
            self.stats.decoded_sequences += decode_count as u64;
            self.stats.max_decode_batch = self.stats.max_decode_batch.max(decode_count);
        }
        let mut prefills: Vec<Option<Prefill>> = prefills.into_iter().map(Some).collect();
        for u in uses {
            match u {
                Use::Decode(ri, si) => {
                    let row = logits.next().expect("one logits row per decode");
                    let run = &mut self.running[*ri];
                    advance(
                        &mut run.seqs[*si],
                        &row,
                        &run.params,
                        &self.loaded,
                        &mut self.stats,
                    );
                }
                Use::Prefill(pi) => {
                    let row = logits.next().expect("one logits row per prefill");
                    let p = prefills[*pi].take().expect("each prefill is used once");
                    self.stats.prompt_tokens += p.ids.len() as u64;
                    self.cache.insert(p.ids.to_vec(), p.cache.clone());
                    let mut seqs = Vec::with_capacity(p.req.n as usize);
                    for index in 0..p.req.n {
                        let mut seq = Sequence {
                            index,
                            rng: sequence_rng(p.req.params.seed, index),
                            cache: p.cache.clone(),
                            generated: Vec::new(),
                            next: 0,
                            logprob: 0.0,
                            done: None,
                        };
                        advance(&mut seq, &row, &p.req.params, &self.loaded, &mut self.stats);
                        seqs.push(seq);
                    }
                    self.running.push(Running {
                        params: p.req.params,
                        prompt: p.ids,
                        cached_prompt_tokens: p.reused,
                        seqs,
                        reply: p.reply,
                    });
                }
                Use::Score(..) => {}
            }
        }
        let mut scores = scores.into_iter();
        for job in scorings {
            let mut per_candidate = Vec::with_capacity(job.inputs.len());
            let mut tokens = 0;
            for (ids, tags, reused, cache) in job.inputs {
                per_candidate.push(scores.by_ref().take(tags.len()).collect());
                tokens += ids.len() - reused;
                // Keep the question prefix for the next scoring of this question.
                let first_tag = tags[0];
                self.cache
                    .insert(ids[..first_tag].to_vec(), cache.truncated(first_tag));
            }
            self.stats.scored_tokens += tokens as u64;
            self.stats.completed_requests += 1;
            let _ = job.reply.send(Ok(ScoreResponse {
                scores: per_candidate,
                tokens: tokens as u32,
            }));
        }
        self.reply_finished();
    }

    /// Answers requests whose every sequence has finished, caching their KV.
    fn reply_finished(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].live() > 0 {
                i += 1;
                continue;
            }
            let run = self.running.swap_remove(i);
            let mut completions = Vec::with_capacity(run.seqs.len());
            for seq in run.seqs {
                // The cache holds the prompt and every generated token but the last.
                let fed = seq.generated.len().saturating_sub(1);
                let mut tokens = run.prompt.to_vec();
                tokens.extend_from_slice(&seq.generated[..fed]);
                if tokens.len() == seq.cache.len() {
                    self.cache.insert(tokens, seq.cache);
                }
                completions.push(seq.done.expect("finished"));
            }
            self.stats.completed_requests += 1;
            let _ = run.reply.send(Ok(GenerateResponse {
                completions,
                prompt_tokens: run.prompt.len() as u32,
                cached_prompt_tokens: run.cached_prompt_tokens as u32,
            }));
        }
    }
}

impl Running {
    fn live(&self) -> usize {
        self.seqs.iter().filter(|s| s.done.is_none()).count()
    }
}

/// Samples the next token of `seq` from `logits` and decides whether it is done.
fn advance(
    seq: &mut Sequence,
    logits: &[f32],
    params: &SamplingParams,
    loaded: &LoadedModel,
    stats: &mut WorkerStats,
) {
    let s = sample(logits, params, &mut seq.rng);
    seq.generated.push(s.token);
    seq.logprob += s.logprob as f64;
    seq.next = s.token;
    stats.generated_tokens += 1;
    let (index, tokens, logprob) = (seq.index, seq.generated.len() as u32, seq.logprob);
    let token_ids = seq.generated.clone();
    let finish = |text: String, reason, stop: Option<String>| Completion {
        index,
        text,
        tokens,
        token_ids,
        finish_reason: reason,
        stop,
        logprob,
    };
    let is_eos = !params.ignore_eos && loaded.codec.eos_ids().contains(&s.token);
    let body = if is_eos {
        &seq.generated[..seq.generated.len() - 1]
    } else {
        &seq.generated[..]
    };
    let decode = |ids: &[u32]| loaded.codec.decode(ids).unwrap_or_default();
    if !params.stop.is_empty() {
        let text = decode(body);
        // Only the tail can hold a new match: earlier text was checked before.
        let longest = params.stop.iter().map(String::len).max().unwrap_or(0);
        let from = decode(&body[..body.len().saturating_sub(1)])
            .len()
            .saturating_sub(longest);
        if let Some((pos, which)) = find_stop(&text, &params.stop, from) {
            seq.done = Some(finish(
                text[..pos].to_string(),
                FinishReason::Stop,
                Some(params.stop[which].clone()),
            ));
            return;
        }
    }
    // Text is only materialised when the sequence ends (or stop strings need it above).
    if is_eos {
        seq.done = Some(finish(decode(body), FinishReason::Eos, None));
    } else if seq.generated.len() >= params.max_tokens {
        seq.done = Some(finish(decode(body), FinishReason::Length, None));
    }
}
