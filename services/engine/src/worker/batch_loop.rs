//! The worker thread: owns the model, the KV caches and the prefix cache, and runs one
//! packed forward pass per iteration (see the module doc of `worker`).
//!
//! One iteration: take new commands, drop cancelled requests, [`Worker::admit`] waiting
//! requests ([`super::admission`]), [`pack`] the pass, run the model, [`read_outputs`],
//! then [`Worker::apply`]: sample ([`advance`]), start prefilled requests, answer scorings
//! and finished requests. A failure inside an iteration, an error or a panic, fails the
//! requests that were in it with `Internal` and the worker carries on; it never dies
//! silently while its node says SERVING.

use super::admission::Admitted;
use super::fair_queue::FairQueue;
use super::packing::{pack, RowUse, Twin};
use super::pool_choice::PoolChoice;
use super::readout::{read_outputs, Outputs};
use super::sequence::{Prefill, Running, ScoreJob, Sequence, Waiting};
use super::stop::advance;
use super::tenant_share::{share_decode_rows, Shares};
use super::types::*;
use super::Command;
use crate::engine::LoadedModel;
use crate::error::EngineError;
use crate::prefix_cache::PrefixCache;
use crate::sampling::{weigh_rows, Weighed};
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

#[cfg(test)]
use super::tests;

pub(super) struct Worker {
    pub(super) loaded: LoadedModel,
    pub(super) config: WorkerConfig,
    pub(super) cache: PrefixCache,
    rx: mpsc::UnboundedReceiver<Command>,
    pub(super) waiting: FairQueue<Waiting>,
    /// Prompts cut into chunks ([`super::tenant_share`]) with chunks still to run, in
    /// the order they were admitted.
    pub(super) prefilling: VecDeque<Prefill>,
    pub(super) running: Vec<Running>,
    /// Scoring requests with parts waiting or in a pass ([`super::scoring`]), by id.
    pub(super) score_jobs: HashMap<u64, ScoreJob>,
    pub(super) next_score_job: u64,
    /// The prefills and scorings of the pass in progress (so a failure can answer them).
    pass: Admitted,
    pub(super) stats: WorkerStats,
    outstanding: Arc<AtomicUsize>,
    /// Every core, for passes of at least [`WIDE_PASS_ROWS`] rows, when the loop itself
    /// runs on a one-thread pool (see `ModelWorker::spawn`), and whether such a pass
    /// runs there or on the loop's thread ([`PoolChoice`]).
    wide: Option<(rayon::ThreadPool, PoolChoice)>,
}

/// Rows (new tokens) from which a pass runs on the wide pool. Measured on the bundled
/// generator (docs/engine.md, "Threads"): one decode row is ~20% slower on two threads
/// (the hand-offs cost more than the split saves), eight rows are ~35% faster.
pub(super) const WIDE_PASS_ROWS: usize = 8;

impl Worker {
    pub(super) fn new(
        loaded: LoadedModel,
        config: WorkerConfig,
        rx: mpsc::UnboundedReceiver<Command>,
        outstanding: Arc<AtomicUsize>,
        wide: Option<rayon::ThreadPool>,
    ) -> Self {
        let wide = wide.map(|pool| (pool, PoolChoice::default()));
        Self {
            cache: PrefixCache::new(config.prefix_cache_entries, config.prefix_cache_bytes),
            loaded,
            config,
            rx,
            waiting: FairQueue::default(),
            prefilling: VecDeque::new(),
            running: Vec::new(),
            score_jobs: HashMap::new(),
            next_score_job: 0,
            pass: Admitted::default(),
            stats: WorkerStats::default(),
            outstanding,
            wide,
        }
    }

    pub(super) fn run(mut self) {
        loop {
            if self.running.is_empty() && self.prefilling.is_empty() && self.waiting.is_empty() {
                match self.rx.blocking_recv() {
                    Some(cmd) => self.accept(cmd),
                    None => return,
                }
            }
            while let Ok(cmd) = self.rx.try_recv() {
                self.accept(cmd);
            }
            self.drop_cancelled();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.step())) {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(panic = %what, "the batch loop failed; failing the requests in it");
                self.fail_pass(&format!("the model worker failed: {what}"));
            }
        }
    }

    fn accept(&mut self, cmd: Command) {
        match cmd {
            Command::Generate(tenant, req, ids, reply) => self
                .waiting
                .push(tenant, Waiting::Generate(req, ids, reply)),
            Command::Score(tenant, encoded, reply) => self.accept_score(tenant, encoded, reply),
            Command::Stats(reply) => {
                let mut stats = self.stats.clone();
                stats.queued_requests = self.outstanding.load(Ordering::Relaxed);
                stats.active_sequences = self.active_sequences();
                stats.waiting_requests = self.waiting_requests();
                stats.prefix_cache = self.cache.stats();
                let _ = reply.send(stats);
            }
        }
    }

    /// Drops requests whose caller has gone: running and waiting generates, scoring
    /// jobs, and the waiting parts of jobs that are gone (cancelled or failed).
    fn drop_cancelled(&mut self) {
        let (running, prefilling, jobs) = (
            self.running.len(),
            self.prefilling.len(),
            self.score_jobs.len(),
        );
        self.running.retain(|r| !r.reply.is_closed());
        self.prefilling.retain(|p| !p.reply.is_closed());
        self.score_jobs.retain(|_, job| !job.reply.is_closed());
        let mut cancelled_waiting = 0;
        let live_jobs = &self.score_jobs;
        self.waiting.retain(|w| match w {
            Waiting::Generate(_, _, reply) => {
                let cancelled = reply.is_closed();
                cancelled_waiting += usize::from(cancelled);
                !cancelled
            }
            Waiting::Score(part) => live_jobs.contains_key(&part.job),
        });
        let dropped = running - self.running.len() + prefilling - self.prefilling.len()
            + cancelled_waiting
            + jobs
            - self.score_jobs.len();
        self.stats.cancelled_requests += dropped as u64;
    }

    /// Requests not yet (wholly) admitted: waiting generates, prompts with chunks still
    /// to prefill, and scorings with a part waiting (between passes, every scoring job
    /// has one).
    fn waiting_requests(&self) -> usize {
        self.waiting.count(|w| matches!(w, Waiting::Generate(..)))
            + self.prefilling.len()
            + self.score_jobs.len()
    }

    pub(super) fn active_sequences(&self) -> usize {
        self.running.iter().map(Running::live).sum()
    }

    /// One packed forward pass over decodes, prefills and scorings, then bookkeeping.
    fn step(&mut self) {
        let started = std::time::Instant::now();
        let mut shares = Shares::plan(&self.demand());
        let pass = self.stats.forward_passes + 1;
        let decode_rows = share_decode_rows(&mut self.running, pass, &mut shares);
        self.stats.rows_sat_out += (self.active_sequences() - decode_rows) as u64;
        self.pass = self.admit(decode_rows, &mut shares);
        #[cfg(test)]
        if self
            .pass
            .prefills
            .iter()
            .any(|p| p.req.prompt.contains(tests::PANIC_MARK))
        {
            panic!("injected by a test");
        }
        if decode_rows == 0 && self.pass.prefills.is_empty() && self.pass.scorings.is_empty() {
            return;
        }
        let summary = tracing::enabled!(target: "ponder_engine::pass", tracing::Level::TRACE)
            .then(|| self.pass_summary());
        let packed = pack(
            &mut self.running,
            &mut self.pass.prefills,
            &mut self.pass.scorings,
            self.config.share_twins,
        );
        let (uses, lens, twins) = (packed.uses, packed.lens, packed.twins);
        let mut segments = packed.segments;
        let rows: usize = segments.iter().map(|s| s.tokens.len()).sum();
        let model = &self.loaded.model;
        let hidden = match &mut self.wide {
            Some((pool, choice)) if rows >= WIDE_PASS_ROWS => {
                let on_wide = choice.use_wide();
                let began = std::time::Instant::now();
                let hidden = if on_wide {
                    pool.install(|| model.forward(&mut segments))
                } else {
                    model.forward(&mut segments)
                };
                choice.record(on_wide, rows, began.elapsed());
                self.stats.wide_passes += u64::from(on_wide);
                hidden
            }
            _ => model.forward(&mut segments),
        };
        drop(segments);
        self.stats.forward_passes += 1;
        let outputs = hidden.map_err(EngineError::from).and_then(|hidden| {
            read_outputs(&self.loaded, &hidden, &lens, &uses, &self.pass.scorings)
        });
        let forward = started.elapsed();
        match outputs {
            Ok(outputs) => self.apply(&uses, &twins, outputs),
            Err(e) => {
                tracing::error!(error = %e, "forward pass failed");
                self.fail_pass(&e.to_string());
            }
        }
        // One line per pass at trace level (RUST_LOG=ponder_engine::pass=trace): what
        // a slow call's passes held, when its latency has to be explained.
        if let Some(summary) = summary {
            tracing::trace!(
                target: "ponder_engine::pass",
                rows,
                forward_us = forward.as_micros() as u64,
                total_us = started.elapsed().as_micros() as u64,
                "{summary}"
            );
        }
    }

    /// Who is in the pass in progress, per tenant: decode rows (of its live rows),
    /// prefill tokens (chunks), scoring parts.
    fn pass_summary(&self) -> String {
        #[derive(Default)]
        struct Part {
            decode: usize,
            live: usize,
            prefill: usize,
        }
        let mut parts: HashMap<u64, Part> = HashMap::new();
        for run in &self.running {
            let part = parts.entry(run.tenant).or_default();
            part.live += run.live();
            part.decode += run.seqs.iter().filter(|s| s.decodes()).count();
        }
        for p in &self.pass.prefills {
            parts.entry(p.tenant).or_default().prefill += p.chunk_end - p.cache.len();
        }
        let mut line: Vec<String> = parts
            .iter()
            .map(|(t, p)| {
                format!(
                    "{t:016x}: decode {}/{} prefill {}",
                    p.decode, p.live, p.prefill
                )
            })
            .collect();
        line.sort();
        format!(
            "{}; scoring parts {}",
            line.join(", "),
            self.pass.scorings.len()
        )
    }

    /// Fails every request in the pass in progress and every running one.
    fn fail_pass(&mut self, msg: &str) {
        let Admitted { prefills, scorings } = std::mem::take(&mut self.pass);
        let failed = self.running.len() + prefills.len() + self.fail_scorings(scorings, msg);
        self.stats.failed_requests += failed as u64;
        let err = || EngineError::Internal(msg.to_string());
        for run in self.running.drain(..) {
            let _ = run.reply.send(Err(err()));
        }
        for p in prefills {
            let _ = p.reply.send(Err(err()));
        }
    }

    /// Samples, starts newly prefilled requests, answers scorings and finished requests.
    fn apply(&mut self, uses: &[RowUse], twins: &[Twin], outputs: Outputs) {
        let Admitted { prefills, scorings } = std::mem::take(&mut self.pass);
        // Each row's weighing (the costly part of sampling) for all rows at once, in
        // parallel; the draws below then go in order.
        let temperatures: Vec<f32> = uses
            .iter()
            .filter_map(|u| match *u {
                RowUse::Decode { run, .. } => Some(self.running[run].params.temperature),
                RowUse::Prefill {
                    prefill,
                    last: true,
                } => Some(prefills[prefill].req.params.temperature),
                _ => None,
            })
            .collect();
        let pool = self.loaded.model.lm_head.pool();
        let weighed = weigh_rows(&outputs.logits, &temperatures, pool);
        let mut logits = outputs.logits.iter().zip(&weighed);
        let decode_count = twins.len()
            + uses
                .iter()
                .filter(|u| matches!(u, RowUse::Decode { .. }))
                .count();
        self.stats.twin_rows += twins.len() as u64;
        let mut followers: HashMap<(usize, usize), Vec<(usize, usize)>> = HashMap::new();
        for t in twins {
            followers.entry(t.leader).or_default().push(t.follower);
        }
        if decode_count > 0 {
            self.stats.decode_steps += 1;
            self.stats.decoded_sequences += decode_count as u64;
            self.stats.max_decode_batch = self.stats.max_decode_batch.max(decode_count);
            self.stats.last_decode_batch = decode_count;
        }
        let mut prefills: Vec<Option<Prefill>> = prefills.into_iter().map(Some).collect();
        for u in uses {
            let (RowUse::Decode { .. } | RowUse::Prefill { last: true, .. }) = u else {
                continue;
            };
            let Some((row, weighed)) = logits.next() else {
                // read_outputs gives one row per decode and prefill use.
                panic!("the pass produced fewer logits rows than decode and prefill uses");
            };
            match *u {
                RowUse::Decode { run, seq } => {
                    // Twins first: each forks the leader's cache as the pass left it.
                    for &(fr, fs) in followers.get(&(run, seq)).into_iter().flatten() {
                        let cache = self.running[run].seqs[seq].cache.clone();
                        let follower = &mut self.running[fr];
                        follower.seqs[fs].cache = cache;
                        advance(
                            &mut follower.seqs[fs],
                            row,
                            weighed,
                            &follower.params,
                            &self.loaded,
                            &mut self.stats,
                        );
                    }
                    let run = &mut self.running[run];
                    advance(
                        &mut run.seqs[seq],
                        row,
                        weighed,
                        &run.params,
                        &self.loaded,
                        &mut self.stats,
                    );
                }
                RowUse::Prefill { prefill, .. } => {
                    if let Some(p) = prefills[prefill].take() {
                        self.start(p, row, weighed);
                    }
                }
                RowUse::Score { .. } => {}
            }
        }
        // Prompts with chunks still to run go on in the next pass.
        let partial = prefills.into_iter().flatten();
        let before = self.prefilling.len();
        self.prefilling.extend(partial);
        self.stats.partial_prefills += (self.prefilling.len() - before) as u64;
        self.answer_scorings(scorings, outputs.scores, outputs.token_logp);
        self.reply_finished();
    }

    /// A prefilled request becomes running: its `n` sequences sample their first token
    /// (from one weighing of the prompt's last row).
    fn start(&mut self, p: Prefill, row: &[f32], weighed: &Weighed) {
        self.stats.prompt_tokens += p.ids.len() as u64;
        self.cache.insert(p.ids.to_vec(), p.cache.clone());
        let mut seqs = Vec::with_capacity(p.req.n as usize);
        let params = &p.req.params;
        for index in 0..p.req.n {
            let mut seq = Sequence::new(index, params.seed, p.cache.clone());
            advance(
                &mut seq,
                row,
                weighed,
                params,
                &self.loaded,
                &mut self.stats,
            );
            seqs.push(seq);
        }
        self.running.push(Running {
            tenant: p.tenant,
            params: p.req.params,
            prompt: p.ids,
            cached_prompt_tokens: p.reused,
            seqs,
            reply: p.reply,
        });
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
                completions.extend(seq.done);
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
