//! Admission: which waiting requests join the next pass, within the token and sequence
//! budgets, and their preparation (tokenising, context checks, prefix-cache lookups).
//! A request that cannot run is answered with its error here and never enters a pass.

use super::batch_loop::Worker;
use super::sequence::{Prefill, ScoreInput, Scoring, Waiting};
use super::types::{GenerateRequest, ScoreRequest};
use crate::error::{EngineError, Result};
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
    pub(super) fn admit(&mut self, decode_rows: usize) -> Admitted {
        let mut admitted = Admitted::default();
        let mut tokens = decode_rows;
        let mut seqs = self.active_sequences();
        while let Some(next) = self.waiting.front() {
            let admitted_any =
                !admitted.prefills.is_empty() || !admitted.scorings.is_empty() || decode_rows > 0;
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
                        admitted.prefills.push(Prefill {
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
                        tokens += inputs.iter().map(|i| i.ids.len() - i.reused).sum::<usize>();
                        admitted.scorings.push(Scoring { inputs, reply });
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
        admitted
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

    fn prepare_scoring(&mut self, req: &ScoreRequest) -> Result<Vec<ScoreInput>> {
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
            let Some(&first_tag) = tags.first() else {
                return Err(EngineError::invalid(format!("candidate {i} has no steps")));
            };
            // Reuse only what precedes the first tag: tag rows must be computed.
            let cache = self
                .cache
                .lookup(&ids[..first_tag + 1])
                .unwrap_or_else(|| KvCache::new(self.loaded.model.config.num_layers));
            let reused = cache.len();
            inputs.push(ScoreInput {
                ids,
                tags,
                reused,
                cache,
            });
        }
        Ok(inputs)
    }
}
