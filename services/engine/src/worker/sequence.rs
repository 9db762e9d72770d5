//! The batch loop's bookkeeping types: what waits, what runs, and what one pass holds.

use super::stop::StopScan;
use super::types::*;
use crate::error::Result;
use crate::kv::KvCache;
use crate::sampling::{sequence_rng, SamplingParams};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use tokio::sync::oneshot;

pub(super) type GenerateReply = oneshot::Sender<Result<GenerateResponse>>;
pub(super) type ScoreReply = oneshot::Sender<Result<ScoreResponse>>;

/// Token ids of a PRM input and the positions of its step tags.
pub(super) type EncodedCandidate = (Vec<u32>, Vec<usize>);

/// A request accepted by the worker and not yet admitted into a pass, with its
/// tokens (encoded by the handle, on the caller's task, never on the model thread).
pub(super) enum Waiting {
    Generate(GenerateRequest, Vec<u32>, GenerateReply),
    /// One part of a scoring request ([`ScoreJob`]): a scoring of many long candidates
    /// runs over several passes, so other tenants' requests get passes in between.
    Score(ScorePart),
}

/// Candidates `indices` of scoring job `job` (consecutive, unless the part holds
/// candidates deferred from an earlier pass: [`super::scoring`]).
pub(super) struct ScorePart {
    pub job: u64,
    pub indices: Vec<usize>,
    pub candidates: Vec<EncodedCandidate>,
    /// Their tokens (before any prefix-cache reuse): what the part adds to a pass.
    pub tokens: usize,
}

/// A scoring request whose parts are waiting or in a pass; answered when the last
/// part has been scored.
pub(super) struct ScoreJob {
    pub scores: Vec<Vec<f32>>,
    /// Tokens run through the model so far (cached prefixes excluded).
    pub tokens: usize,
    pub parts_left: usize,
    pub reply: ScoreReply,
}

/// One sampled sequence of a running request.
pub(super) struct Sequence {
    pub index: u32,
    pub rng: ChaCha8Rng,
    pub cache: KvCache,
    pub generated: Vec<u32>,
    /// Sampled but not yet fed through the model.
    pub next: u32,
    pub logprob: f64,
    /// The decoded text so far, kept only while stop strings must be checked.
    pub scan: StopScan,
    pub done: Option<Completion>,
    /// The pass this sequence last decoded in ([`super::tenant_share`]).
    pub last_decoded: u64,
    /// Whether it sits the coming pass out, to share the step with other tenants.
    pub sits_out: bool,
}

impl Sequence {
    /// Sample `index` of a request with `seed`, starting from the prompt's KV.
    pub fn new(index: u32, seed: u64, cache: KvCache) -> Self {
        Self {
            index,
            rng: sequence_rng(seed, index),
            cache,
            generated: Vec::new(),
            next: 0,
            logprob: 0.0,
            scan: StopScan::default(),
            done: None,
            last_decoded: 0,
            sits_out: false,
        }
    }

    /// Whether it is live and decodes in the coming pass.
    pub fn decodes(&self) -> bool {
        self.done.is_none() && !self.sits_out
    }
}

/// A generate request whose sequences are decoding.
pub(super) struct Running {
    /// Whose query this serves (see [`super::fair_queue`]).
    pub tenant: u64,
    pub params: SamplingParams,
    pub prompt: Arc<Vec<u32>>,
    pub cached_prompt_tokens: usize,
    pub seqs: Vec<Sequence>,
    pub reply: GenerateReply,
}

impl Running {
    /// Sequences still decoding.
    pub fn live(&self) -> usize {
        self.seqs.iter().filter(|s| s.done.is_none()).count()
    }
}

/// A generate request whose prompt is being prefilled: its tokens `cache.len()..chunk_end`
/// run in this pass. A prompt longer than what its tenant may put into one pass
/// ([`super::tenant_share`]) runs in chunks over several passes; the last chunk's last
/// row gives the first token.
pub(super) struct Prefill {
    pub tenant: u64,
    pub req: GenerateRequest,
    pub ids: Arc<Vec<u32>>,
    /// Prompt tokens whose KV came from the prefix cache.
    pub reused: usize,
    /// The prompt's KV so far (the cached prefix, then every chunk already run).
    pub cache: KvCache,
    /// Where this pass's chunk ends (`ids.len()` for the last chunk).
    pub chunk_end: usize,
    pub reply: GenerateReply,
}

impl Prefill {
    /// Whether this pass runs the rest of the prompt.
    pub fn is_last_chunk(&self) -> bool {
        self.chunk_end == self.ids.len()
    }
}

/// One candidate of a scoring request, encoded as the PRM reads it.
pub(super) struct ScoreInput {
    pub ids: Vec<u32>,
    /// Positions of the step tags in `ids` (never empty).
    pub tags: Vec<usize>,
    /// Leading tokens whose KV came from the prefix cache.
    pub reused: usize,
    /// Likelihood readout: the log-probabilities of its step tokens up to `reused`,
    /// read when an earlier candidate it extends was scored (see
    /// [`crate::prefix_cache::PrefixCache::lookup_scored`]).
    pub known: Vec<f32>,
    pub cache: KvCache,
}

/// A part of a scoring request admitted into this pass.
pub(super) struct Scoring {
    pub job: u64,
    /// Each input's index among the job's candidates.
    pub indices: Vec<usize>,
    pub inputs: Vec<ScoreInput>,
}
