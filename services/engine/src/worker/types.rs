//! What callers send to and get back from a model worker, and its settings and counters.

use crate::prefix_cache::PrefixCacheStats;
use crate::sampling::{FinishReason, SamplingParams};
use serde::{Deserialize, Serialize};

/// Most samples one generate request may ask for.
pub const MAX_SAMPLES_PER_REQUEST: u32 = 256;
/// Longest prompt a worker can be configured to accept, in bytes (the token limit is
/// the model's context).
pub const MAX_PROMPT_CHARS: usize = 256 * 1024;
/// Longest prompt accepted by default, in bytes (a context of 8,192 tokens is about
/// 32 KiB of English).
pub const DEFAULT_MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Stop strings one generate request may carry by default.
pub const DEFAULT_MAX_STOP_STRINGS: usize = 16;
/// Their total length in bytes by default.
pub const DEFAULT_MAX_STOP_BYTES: usize = 1024;

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
    /// New tokens per forward pass (at least one waiting request is always admitted; a
    /// scoring request longer than this runs over several passes); 0 picks it from the
    /// model's size (see [`WorkerConfig::batch_tokens_for`]).
    pub max_batch_tokens: usize,
    /// Entries the prefix cache keeps at most (0: no prefix cache).
    pub prefix_cache_entries: usize,
    /// Bytes of KV buffers the prefix cache keeps at most (see [`crate::prefix_cache`]).
    pub prefix_cache_bytes: usize,
    /// Threads of the worker's compute pool; 0 picks them from the model's size (see
    /// [`WorkerConfig::threads_for`]).
    pub threads: usize,
    /// Longest prompt (generate) or question plus steps (score) accepted, in bytes.
    pub max_prompt_bytes: usize,
    /// Stop strings per generate request, and their total bytes.
    pub max_stop_strings: usize,
    pub max_stop_bytes: usize,
    /// Whether a sampled sequence in the same state as another (same KV, same next token)
    /// takes that one's output instead of computing its own row ([`super::packing`]).
    /// Completions are the same either way; off only to measure what it saves (the
    /// default is on unless `PONDER_NO_TWINS` is set, as `PONDER_NO_VNNI` is for kernels).
    pub share_twins: bool,
    /// Whether a scoring candidate that shares a long prefix with one already in the pass
    /// waits for a later pass to reuse its KV ([`super::scoring`], deferral). Scores are
    /// the same either way; off only to measure what it saves (`PONDER_NO_DEFER`).
    pub defer_shared_candidates: bool,
}

/// Below this many parameters a worker computes on one thread by default.
pub const SMALL_MODEL_PARAMETERS: u64 = 20_000_000;

impl WorkerConfig {
    /// The pool size for a model of `parameters`: `threads` when set; otherwise one
    /// thread for a model under [`SMALL_MODEL_PARAMETERS`], whose operations are too
    /// small to split (measured in docs/engine.md, "Threads"), and every core for a
    /// larger one.
    pub fn threads_for(&self, parameters: u64) -> usize {
        match self.threads {
            0 if parameters < SMALL_MODEL_PARAMETERS => 1,
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The token budget of one pass for a model of `parameters`: `max_batch_tokens`
    /// when set; otherwise the largest power of two whose pass costs at most
    /// [`AUTO_PASS_FLOPS`] (2 x parameters x tokens), within 128..=2048. Why: a pass is
    /// what every other request waits for, so its length is a latency bound (about
    /// 0.1 s on the 2-core reference host), and past a few hundred rows a bigger pass
    /// buys no throughput (docs/security.md, "Bounded compute"). The bundled models:
    /// 2048 for arith-gen-xs and -s, 512 for arith-gen-l and arith-prm.
    pub fn batch_tokens_for(&self, parameters: u64) -> usize {
        match self.max_batch_tokens {
            0 => {
                let fits = (AUTO_PASS_FLOPS / (2.0 * parameters.max(1) as f64)) as usize;
                let power = fits.checked_ilog2().map_or(1, |log| 1usize << log);
                power.clamp(128, 2048)
            }
            n => n,
        }
    }
}

/// Entries a prefix cache keeps by default: a few searches' paths (DVTS at budget 256
/// keeps 256); lookups cost the same however many there are.
pub const DEFAULT_PREFIX_CACHE_ENTRIES: usize = 4096;

/// The prefix cache's default bound, in MiB: 1,024 paths of 300 tokens of the bundled
/// generator (768 B of KV per token, buffers up to a fifth spare) take about 300 MiB;
/// SmolLM2-135M keeps about 11,000 tokens (46 KB per token).
pub const DEFAULT_PREFIX_CACHE_MIB: usize = 512;

/// The compute of one pass that an automatic `max_batch_tokens` aims at, in FLOPs.
pub const AUTO_PASS_FLOPS: f64 = 1.5e9;

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            max_queued_requests: 256,
            max_active_sequences: 256,
            max_batch_tokens: 0,
            prefix_cache_entries: DEFAULT_PREFIX_CACHE_ENTRIES,
            prefix_cache_bytes: DEFAULT_PREFIX_CACHE_MIB << 20,
            threads: 0,
            max_prompt_bytes: DEFAULT_MAX_PROMPT_BYTES,
            max_stop_strings: DEFAULT_MAX_STOP_STRINGS,
            max_stop_bytes: DEFAULT_MAX_STOP_BYTES,
            share_twins: std::env::var_os("PONDER_NO_TWINS").is_none(),
            defer_shared_candidates: std::env::var_os("PONDER_NO_DEFER").is_none(),
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
    /// Sequences decoded by the latest decode step.
    pub last_decode_batch: usize,
    /// Sum over decode steps of the live sequences that sat the step out so that another
    /// tenant's sequences decode in shorter steps (see `worker::tenant_share`).
    pub rows_sat_out: u64,
    /// Sum over decode steps of the sequences that took a twin's row instead of their
    /// own (rows computed = `decoded_sequences - twin_rows`; see `worker::packing`).
    pub twin_rows: u64,
    /// Scoring candidates put off to a later pass to reuse what the pass computes for one
    /// they share a prefix with (counted each time; see `worker::scoring`).
    pub deferred_candidates: u64,
    /// Passes run on the wide pool (every core; see `worker::pool_choice`).
    pub wide_passes: u64,
    /// Prompt chunks run that did not end their prompt (a prompt longer than what its
    /// tenant may put into one pass is prefilled over several).
    pub partial_prefills: u64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub scored_tokens: u64,
    pub completed_requests: u64,
    pub cancelled_requests: u64,
    pub failed_requests: u64,
    pub queued_requests: usize,
    /// Requests accepted and not yet admitted to the batch.
    pub waiting_requests: usize,
    pub active_sequences: usize,
    pub prefix_cache: PrefixCacheStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_size_follows_the_model_unless_set() {
        let auto = WorkerConfig::default();
        assert_eq!(auto.threads_for(1_300_000), 1);
        assert_eq!(auto.threads_for(SMALL_MODEL_PARAMETERS - 1), 1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(auto.threads_for(SMALL_MODEL_PARAMETERS), cores);
        let three = WorkerConfig {
            threads: 3,
            ..WorkerConfig::default()
        };
        assert_eq!(three.threads_for(1_300_000), 3);
        assert_eq!(three.threads_for(135_000_000), 3);
    }

    #[test]
    fn the_pass_budget_follows_the_model_unless_set() {
        let auto = WorkerConfig::default();
        assert_eq!(auto.batch_tokens_for(46_624), 2048);
        assert_eq!(auto.batch_tokens_for(226_496), 2048);
        assert_eq!(auto.batch_tokens_for(1_305_472), 512);
        assert_eq!(auto.batch_tokens_for(135_000_000), 128);
        assert_eq!(auto.batch_tokens_for(0), 2048);
        let set = WorkerConfig {
            max_batch_tokens: 300,
            ..WorkerConfig::default()
        };
        assert_eq!(set.batch_tokens_for(1_305_472), 300);
    }
}
