//! The worker thread: owns the model, the KV caches and the prefix cache, and
//! runs one packed forward pass per iteration (see the module doc of `worker`).

use super::types::*;
use super::Command;
use crate::engine::LoadedModel;
use crate::error::{EngineError, Result};
use crate::kv::KvCache;
use crate::model::Segment;
use crate::prefix_cache::PrefixCache;
use crate::sampling::{find_stop, sample, sequence_rng, FinishReason, SamplingParams};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

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

pub(super) struct Worker {
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
    pub(super) fn new(
        loaded: LoadedModel,
        config: WorkerConfig,
        rx: mpsc::UnboundedReceiver<Command>,
        outstanding: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            cache: PrefixCache::new(config.prefix_cache_entries, config.prefix_cache_tokens),
            loaded,
            config,
            rx,
            waiting: VecDeque::new(),
            running: Vec::new(),
            stats: WorkerStats::default(),
            outstanding,
        }
    }

    pub(super) fn run(mut self) {
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
                    let _ = run.reply.send(Err(EngineError::Internal(msg.clone())));
                }
                for p in prefills {
                    let _ = p.reply.send(Err(EngineError::Internal(msg.clone())));
                }
                for s in scorings {
                    let _ = s.reply.send(Err(EngineError::Internal(msg.clone())));
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
