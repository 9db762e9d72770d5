//! The recorded backend (`--engine recorded:DIR`): a generator or verifier node that
//! answers from a recording of real calls, at the pace of a latency model fitted to the
//! real engine, with no model work. SYNTHETIC TIMING, REAL ANSWERS: it exists to
//! measure a cluster of tens of nodes on a machine that cannot run tens of models
//! (docs/scaling.md), and is never a default.
//!
//! - [`store`]: the recording on disk, keyed per sample and per candidate.
//! - [`recorder`]: what a real node started with `--record-calls DIR` writes.
//! - [`latency`]: the latency model and its fit.
//! - [`sim`]: the batch loop, simulated.
//!
//! A call whose samples or candidates are not all in the recording fails with
//! INVALID_ARGUMENT and is counted (`ponder_refusals_total{what="call",
//! reason="not_recorded"}`): the node never makes up an answer, so accuracy measured
//! through it is the real engine's.

pub mod latency;
pub mod recorder;
pub mod sim;
pub mod store;

use crate::local::with_deadline;
use latency::{score_attended_context, LatencyModel};
use ponder_engine::prefix_cache::PrefixCacheStats;
use ponder_engine::{ModelInfo, WorkerStats};
use ponder_search::traits::{forward_flops, GeneratorLimits, VerifierCost};
use ponder_search::{
    GenOutput, GenRequest, Generate, Result, Score, ScoreOutput, ScoreRequest, SearchError,
};
use sim::{BatchSim, Work};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use store::{candidate_key, numbered_call, prompt_key, sample_key, score_call_key, Recording};
use tokio::sync::{mpsc, oneshot};

/// The `--engine` value that selects this backend, before its directory.
pub const ENGINE_PREFIX: &str = "recorded:";
/// The name ModelInfo, metrics and logs give this backend.
pub const ENGINE_NAME: &str = "recorded";

/// Limits of a recorded node, as a real node's worker settings.
#[derive(Debug, Clone, Copy)]
pub struct RecordedConfig {
    pub max_queued: usize,
    pub max_active_sequences: usize,
    /// Tokens one pass takes at most (the engine's, which packs score calls up to it;
    /// 0: from the recorded model's size, as the engine picks it).
    pub max_batch_tokens: usize,
}

enum Command {
    Work {
        work: Work,
        prompt: Option<(String, u32)>,
        reply: oneshot::Sender<u32>,
    },
    Stats(oneshot::Sender<WorkerStats>),
}

/// A cheap handle to a recorded node's simulated batch loop.
#[derive(Clone)]
pub struct RecordedWorker {
    tx: mpsc::UnboundedSender<Command>,
    recording: Arc<Recording>,
    info: Arc<ModelInfo>,
    dir: PathBuf,
    outstanding: Arc<AtomicUsize>,
    misses: Arc<AtomicU64>,
    /// How often each score call has been made here: the n-th identical call replays the
    /// n-th recorded one, whose cost the verifier's caches had cut (an identical call
    /// again, or a path scored before, costs the real engine next to nothing).
    score_calls_made: Arc<std::sync::Mutex<HashMap<String, u32>>>,
    config: RecordedConfig,
    max_samples: u32,
}

impl RecordedWorker {
    /// Loads the recording and latency model in `dir` for a node of `role`
    /// ("generator" or "verifier") and starts its loop.
    pub fn open(dir: &Path, role: &str, config: RecordedConfig) -> anyhow::Result<Self> {
        let recording = Recording::load(dir)?;
        anyhow::ensure!(
            recording.info.role == role,
            "{} records a {} ({}); this node is a {role}",
            dir.display(),
            recording.info.role,
            recording.info.model_id
        );
        let latency = LatencyModel::load(dir)?;
        anyhow::ensure!(
            latency.model_id == recording.info.model_id,
            "{}: latency.json was fitted on {:?}, the recording is of {:?}",
            dir.display(),
            latency.model_id,
            recording.info.model_id
        );
        let needed = if role == "generator" {
            latency.generate.is_some()
        } else {
            latency.score.is_some()
        };
        anyhow::ensure!(
            needed,
            "{}: latency.json has no cost for a {role}'s calls",
            dir.display()
        );
        if recording.conflicts > 0 {
            tracing::warn!(
                dir = %dir.display(),
                conflicts = recording.conflicts,
                "keys recorded twice with different answers; the first of each is served"
            );
        }
        let i = &recording.info;
        let info = ModelInfo {
            id: i.model_id.clone(),
            path: dir.display().to_string(),
            architecture: i.architecture.clone(),
            format: i.format.clone(),
            dtype: i.dtype.clone(),
            kv_cache: String::new(),
            parameters: i.parameters,
            vocab_size: i.vocab_size as usize,
            context_length: i.context_length as usize,
            num_layers: 0,
            hidden_size: 0,
            prm: (!i.prm.is_empty()).then(|| i.prm.clone()),
            max_token_bytes: i.max_token_bytes as usize,
            prm_cost: (!i.prm.is_empty()).then_some(ponder_engine::prm::PrmCost {
                prompt_overhead: i.prm_prompt_overhead,
                step_overhead: i.prm_step_overhead,
            }),
        };
        let recorded_max = if i.max_samples_per_request == 0 {
            256
        } else {
            i.max_samples_per_request
        };
        let max_samples = recorded_max.min(config.max_active_sequences as u32).max(1);
        let sim = BatchSim::new(
            latency.generate,
            latency.score,
            config.max_active_sequences,
            ponder_engine::WorkerConfig {
                max_batch_tokens: config.max_batch_tokens,
                ..Default::default()
            }
            .batch_tokens_for(i.parameters),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_loop(sim, rx));
        Ok(Self {
            tx,
            recording: Arc::new(recording),
            info: Arc::new(info),
            dir: dir.to_path_buf(),
            outstanding: Arc::new(AtomicUsize::new(0)),
            misses: Arc::new(AtomicU64::new(0)),
            score_calls_made: Arc::default(),
            config,
            max_samples,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn max_samples(&self) -> u32 {
        self.max_samples
    }

    pub fn queue_depth(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Calls refused because the recording does not hold their answer.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    pub async fn stats(&self) -> Result<WorkerStats> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Stats(reply)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    fn miss(&self, what: &str) -> SearchError {
        self.misses.fetch_add(1, Ordering::Relaxed);
        SearchError::Invalid(format!(
            "recorded backend ({}): {what} is not in the recording; a recorded node serves \
             only the questions and strategies it recorded (docs/scaling.md)",
            self.dir.display()
        ))
    }

    /// Runs `work` through the loop; returns the prompt tokens the simulated prefix
    /// cache held. Fails with RESOURCE_EXHAUSTED past the queue limit, as the engine.
    async fn run(&self, work: Work, prompt: Option<(String, u32)>) -> Result<u32> {
        let depth = self.outstanding.fetch_add(1, Ordering::Relaxed);
        let _guard = Outstanding(self.outstanding.clone());
        if depth >= self.config.max_queued {
            return Err(SearchError::Overloaded(format!(
                "{} requests queued (the node's --max-queued)",
                self.config.max_queued
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Work {
                work,
                prompt,
                reply,
            })
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}

fn gone() -> SearchError {
    SearchError::Unavailable("the recorded node's loop has stopped".into())
}

/// Decrements the queue depth when a call ends, however it ends.
struct Outstanding(Arc<AtomicUsize>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Generate for RecordedWorker {
    async fn generate(&self, req: GenRequest) -> Result<GenOutput> {
        if req.n == 0 || req.n > self.max_samples {
            return Err(SearchError::invalid(format!(
                "n must be in 1..={}, got {}",
                self.max_samples, req.n
            )));
        }
        let prompt_tokens = *self
            .recording
            .prompts
            .get(&prompt_key(&req.prompt))
            .ok_or_else(|| self.miss("the prompt"))?;
        let samples = (0..req.n)
            .map(|i| self.recording.samples.get(&sample_key(&req, i)).cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.miss(&format!("a sample of seed {}", req.seed)))?;
        let work = Work::Generate {
            prompt_tokens,
            uncached_prompt_tokens: prompt_tokens,
            sample_tokens: samples.iter().map(|s| s.tokens).collect(),
        };
        let prompt = Some((req.prompt.clone(), prompt_tokens));
        let cached = with_deadline(req.deadline, self.run(work, prompt)).await?;
        Ok(GenOutput::new(
            samples,
            prompt_tokens,
            cached,
            self.info.parameters,
        ))
    }

    fn limits(&self) -> GeneratorLimits {
        GeneratorLimits {
            max_token_bytes: self.info.max_token_bytes as u32,
            context_length: self.info.context_length as u32,
            max_samples: self.max_samples,
            parameters: self.info.parameters,
        }
    }
}

impl Score for RecordedWorker {
    async fn score(&self, req: ScoreRequest) -> Result<ScoreOutput> {
        let found = req
            .candidates
            .iter()
            .map(|c| {
                self.recording
                    .candidates
                    .get(&candidate_key(&req.question, &c.steps))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.miss("a candidate"))?;
        // The call's own count when these candidates were scored together (the n-th
        // time here: the n-th recorded, else the first; a recording from before calls
        // were counted has one, unnumbered); otherwise the sum of their shares of the
        // calls they were recorded in.
        let call = score_call_key(&req.question, &req.candidates);
        let nth = {
            let mut made = self
                .score_calls_made
                .lock()
                .expect("never held across a panic");
            let n = made.entry(call.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let recorded = [numbered_call(&call, nth), numbered_call(&call, 0), call]
            .into_iter()
            .find_map(|key| self.recording.score_calls.get(&key).copied());
        let tokens = recorded.unwrap_or_else(|| found.iter().map(|c| c.tokens).sum());
        let work = Work::Score {
            tokens,
            candidates: found.len() as u32,
            attended_context: score_attended_context(found.iter().map(|c| c.tokens)),
        };
        with_deadline(req.deadline, self.run(work, None)).await?;
        Ok(ScoreOutput {
            scores: found.iter().map(|c| c.scores.clone()).collect(),
            tokens,
            flops: forward_flops(self.info.parameters, tokens),
        })
    }

    fn cost(&self) -> VerifierCost {
        crate::backend::verifier_cost(&self.info)
    }
}

/// The prefix cache, simulated over prompt text: a prompt's cached share is its longest
/// common prefix with a recent prompt, in proportion to its bytes (the bundled models
/// tokenize a byte per token). The longest common prefix with any string of a sorted
/// set is with one of its two neighbours in order, so a lookup is two probes.
struct PrefixSim {
    sorted: BTreeSet<String>,
    order: VecDeque<String>,
    capacity: usize,
    stats: PrefixCacheStats,
}

impl PrefixSim {
    fn new(capacity: usize) -> Self {
        Self {
            sorted: BTreeSet::new(),
            order: VecDeque::new(),
            capacity,
            stats: PrefixCacheStats::default(),
        }
    }

    /// The cached tokens of `prompt` (of `tokens` tokens); then remembers it.
    fn lookup(&mut self, prompt: &str, tokens: u32) -> u32 {
        let common = |other: &String| {
            prompt
                .bytes()
                .zip(other.bytes())
                .take_while(|(a, b)| a == b)
                .count()
        };
        use std::ops::Bound;
        let below = self
            .sorted
            .range::<str, _>((Bound::Unbounded, Bound::Included(prompt)))
            .next_back()
            .map(common);
        let above = self
            .sorted
            .range::<str, _>((Bound::Excluded(prompt), Bound::Unbounded))
            .next()
            .map(common);
        let lcp = below.unwrap_or(0).max(above.unwrap_or(0));
        let cached = if prompt.is_empty() {
            0
        } else {
            // The last prompt token is always run (it yields the first sample's logits).
            ((u64::from(tokens) * lcp as u64 / prompt.len() as u64) as u32)
                .min(tokens.saturating_sub(1))
        };
        self.stats.lookups += 1;
        if cached > 0 {
            self.stats.hits += 1;
            self.stats.saved_tokens += u64::from(cached);
        }
        if self.sorted.insert(prompt.to_string()) {
            self.order.push_back(prompt.to_string());
            if self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.sorted.remove(&old);
                }
            }
        }
        self.stats.entries = self.sorted.len();
        cached
    }
}

/// Prompts the simulated prefix cache remembers.
const PREFIX_CACHE_PROMPTS: usize = 1024;

/// The node's loop in real time: the simulation, woken by calls and by its own next
/// event.
async fn run_loop(mut sim: BatchSim, mut rx: mpsc::UnboundedReceiver<Command>) {
    let origin = Instant::now();
    let mut replies: HashMap<u64, (oneshot::Sender<u32>, u32)> = HashMap::new();
    let mut cache = PrefixSim::new(PREFIX_CACHE_PROMPTS);
    let mut next_id = 0u64;
    let mut completed = 0u64;
    loop {
        let wake = sim.next_event().map(|t| {
            tokio::time::Instant::from_std(origin + std::time::Duration::from_secs_f64(t))
        });
        let command = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => Some(c),
                None => return,
            },
            _ = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => None,
        };
        let now = origin.elapsed().as_secs_f64();
        let mut done = sim.advance(now);
        match command {
            Some(Command::Work {
                mut work,
                prompt,
                reply,
            }) => {
                let mut cached = 0;
                if let (
                    Some((text, tokens)),
                    Work::Generate {
                        uncached_prompt_tokens,
                        ..
                    },
                ) = (prompt, &mut work)
                {
                    cached = cache.lookup(&text, tokens);
                    *uncached_prompt_tokens = tokens - cached;
                }
                let id = next_id;
                next_id += 1;
                replies.insert(id, (reply, cached));
                done.extend(sim.submit(now, id, work));
            }
            Some(Command::Stats(reply)) => {
                let c = sim.counters;
                let _ = reply.send(WorkerStats {
                    decode_steps: c.decode_steps as u64,
                    last_decode_batch: c.last_batch,
                    prompt_tokens: c.prompt_tokens,
                    generated_tokens: c.generated_tokens,
                    scored_tokens: c.scored_tokens,
                    completed_requests: completed,
                    queued_requests: replies.len(),
                    waiting_requests: sim.waiting(),
                    active_sequences: sim.running(),
                    prefix_cache: cache.stats,
                    ..WorkerStats::default()
                });
            }
            None => {}
        }
        for id in done {
            if let Some((reply, cached)) = replies.remove(&id) {
                completed += 1;
                let _ = reply.send(cached);
            }
        }
        // Calls whose callers went away (a deadline, a cancelled query) leave the batch,
        // as they do on the engine.
        let gone: Vec<u64> = replies
            .iter()
            .filter(|(_, (r, _))| r.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            replies.remove(&id);
            sim.cancel(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_sim_finds_the_longest_shared_prefix() {
        let mut c = PrefixSim::new(2);
        assert_eq!(c.lookup("Q: 12+3\nA:", 10), 0);
        // Same prompt: all but the last token.
        assert_eq!(c.lookup("Q: 12+3\nA:", 10), 9);
        // A continuation shares the first 10 of its 20 bytes.
        assert_eq!(c.lookup("Q: 12+3\nA: 15\nB: 1x", 20), 10);
        assert_eq!(c.lookup("zzz", 3), 0);
        // Capacity 2: the first prompt is forgotten, but the longer one that starts
        // with it still holds its tokens.
        assert_eq!(c.lookup("Q: 12+3\nA:", 10), 9);
        assert_eq!((c.stats.lookups, c.stats.entries), (5, 2));
    }
}
