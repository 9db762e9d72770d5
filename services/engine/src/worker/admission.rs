//! Admission: which waiting requests join the next pass, within the token and sequence
//! budgets, and their prefix-cache lookups. Requests arrive tokenised and checked
//! against the context by the handle ([`super::ModelWorker`]), so nothing here can
//! fail and no text is tokenised on the model thread.

use super::batch_loop::Worker;
use super::sequence::{EncodedCandidate, Prefill, ScoreInput, Scoring, Waiting};
use crate::kv::KvCache;
use std::sync::Arc;

/// The requests admitted into one pass.
#[derive(Default)]
pub(super) struct Admitted {
    pub prefills: Vec<Prefill>,
    pub scorings: Vec<Scoring>,
}

impl Worker {
    /// Moves waiting requests into this pass while the token and sequence budgets allow.
    /// A scoring part that would take the pass over its token budget waits for the
    /// next pass (unless the pass would otherwise be empty), so a pass never grows
    /// much past the budget and a small request is never packed behind a long one.
    pub(super) fn admit(&mut self, decode_rows: usize) -> Admitted {
        let mut admitted = Admitted::default();
        let mut tokens = decode_rows;
        let mut seqs = self.active_sequences();
        while let Some(next) = self.waiting.front() {
            let admitted_any =
                !admitted.prefills.is_empty() || !admitted.scorings.is_empty() || decode_rows > 0;
            let fits = match next {
                Waiting::Generate(req, _, _) => {
                    seqs + req.n as usize <= self.config.max_active_sequences
                }
                Waiting::Score(part) => tokens + part.tokens <= self.config.max_batch_tokens,
            };
            if admitted_any && !fits {
                break;
            }
            let Some(next) = self.waiting.pop() else {
                break;
            };
            match next {
                Waiting::Generate(req, ids, reply) => {
                    let (reused, cache) = self.prepare_prefill(&ids);
                    tokens += ids.len() - reused;
                    seqs += req.n as usize;
                    admitted.prefills.push(Prefill {
                        req,
                        ids: Arc::new(ids),
                        reused,
                        cache,
                        reply,
                    });
                }
                Waiting::Score(part) => {
                    let inputs = self.prepare_scoring(part.candidates);
                    tokens += inputs.iter().map(|i| i.ids.len() - i.reused).sum::<usize>();
                    admitted.scorings.push(Scoring {
                        job: part.job,
                        first: part.first,
                        inputs,
                    });
                }
            }
            if tokens >= self.config.max_batch_tokens {
                break;
            }
        }
        admitted
    }

    /// The longest cached prefix of a prompt (its tokens were checked by the handle).
    fn prepare_prefill(&mut self, ids: &[u32]) -> (usize, KvCache) {
        let cache = self
            .cache
            .lookup(ids)
            .unwrap_or_else(|| KvCache::new(self.loaded.model.config.num_layers));
        (cache.len(), cache)
    }

    /// Each candidate with the cached prefix it can reuse: only what precedes the
    /// first row the PRM reads, since those rows must be computed.
    fn prepare_scoring(&mut self, encoded: Vec<EncodedCandidate>) -> Vec<ScoreInput> {
        encoded
            .into_iter()
            .map(|(ids, tags)| {
                let reusable = self
                    .loaded
                    .prm
                    .as_ref()
                    .map_or(0, |p| p.reusable_prefix(&tags));
                let cache = self
                    .cache
                    .lookup(&ids[..(reusable + 1).min(ids.len())])
                    .unwrap_or_else(|| KvCache::new(self.loaded.model.config.num_layers));
                let reused = cache.len();
                ScoreInput {
                    ids,
                    tags,
                    reused,
                    cache,
                }
            })
            .collect()
    }
}
