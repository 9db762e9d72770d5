//! Admission: which waiting requests join the next pass, within the token and sequence
//! budgets, and their prefix-cache lookups. Requests arrive tokenised and checked
//! against the context by the handle ([`super::ModelWorker`]), so nothing here can
//! fail and no text is tokenised on the model thread.

use super::batch_loop::Worker;
use super::scoring::defer_from;
use super::sequence::{Prefill, ScoreInput, ScorePart, Scoring, Waiting};
use super::tenant_share::Shares;
use std::collections::VecDeque;
use std::sync::Arc;

/// The requests admitted into one pass.
#[derive(Default)]
pub(super) struct Admitted {
    pub prefills: Vec<Prefill>,
    pub scorings: Vec<Scoring>,
}

impl Worker {
    /// Moves work into this pass while the token and sequence budgets and the tenants'
    /// shares ([`super::tenant_share`]) allow: first the next chunks of prefills already
    /// in progress, then waiting requests, tenants in turn. A prompt is cut into chunks
    /// by what is left of its tenant's share and, unless it is the pass's first prefill,
    /// of the pass's token budget. A scoring part that would take the pass over its token
    /// budget waits for the next pass (unless the pass would otherwise be empty), so a
    /// pass never grows much past the budget and a small request is never packed behind
    /// a long one.
    pub(super) fn admit(&mut self, decode_rows: usize, shares: &mut Shares) -> Admitted {
        let budget = self.config.max_batch_tokens;
        let mut admitted = Admitted::default();
        let mut tokens = decode_rows;
        let mut seqs = self.active_sequences()
            + self
                .prefilling
                .iter()
                .map(|p| p.req.n as usize)
                .sum::<usize>();
        let mut later = VecDeque::new();
        // Scoring candidates that wait for a later pass (`super::scoring`, deferral).
        let mut deferred: Vec<(u64, ScorePart)> = Vec::new();
        while let Some(mut p) = self.prefilling.pop_front() {
            let room = chunk_room(shares.allowance(p.tenant), budget, tokens, &admitted);
            if room == 0 {
                later.push_back(p);
                continue;
            }
            let chunk = room.min(p.ids.len() - p.cache.len());
            p.chunk_end = p.cache.len() + chunk;
            tokens += chunk;
            shares.take(p.tenant, chunk);
            admitted.prefills.push(p);
        }
        self.prefilling = later;
        while let Some((_, next)) = self.waiting.front_where(|t| shares.allowance(t) > 0) {
            let admitted_any =
                !admitted.prefills.is_empty() || !admitted.scorings.is_empty() || decode_rows > 0;
            let fits = match next {
                Waiting::Generate(req, _, _) => {
                    seqs + req.n as usize <= self.config.max_active_sequences
                }
                Waiting::Score(part) => tokens + part.tokens <= budget,
            };
            if admitted_any && (!fits || tokens >= budget) {
                break;
            }
            let Some((tenant, next)) = self.waiting.pop_where(|t| shares.allowance(t) > 0) else {
                break;
            };
            match next {
                Waiting::Generate(req, ids, reply) => {
                    let (reused, cache) = self.prepare_prefill(&ids);
                    let room = chunk_room(shares.allowance(tenant), budget, tokens, &admitted);
                    let chunk = room.max(1).min(ids.len() - reused);
                    tokens += chunk;
                    shares.take(tenant, chunk);
                    seqs += req.n as usize;
                    admitted.prefills.push(Prefill {
                        tenant,
                        req,
                        ids: Arc::new(ids),
                        reused,
                        chunk_end: reused + chunk,
                        cache,
                        reply,
                    });
                }
                Waiting::Score(part) => {
                    let (scoring, waits) = self.prepare_scoring(part, &admitted.scorings);
                    let Some(scoring) = scoring else {
                        // Every candidate waits: the part goes back whole.
                        deferred.extend(waits.map(|w| (tenant, w)));
                        continue;
                    };
                    if let Some(waits) = waits {
                        // The part is now two, and both are answered.
                        if let Some(job) = self.score_jobs.get_mut(&scoring.job) {
                            job.parts_left += 1;
                        }
                        deferred.push((tenant, waits));
                    }
                    let new: usize = scoring.inputs.iter().map(|i| i.ids.len() - i.reused).sum();
                    tokens += new;
                    shares.take(tenant, new);
                    admitted.scorings.push(scoring);
                }
            }
        }
        for (tenant, part) in deferred.into_iter().rev() {
            self.stats.deferred_candidates += part.candidates.len() as u64;
            self.waiting.push_front(tenant, Waiting::Score(part));
        }
        admitted
    }

    /// The longest cached prefix of a prompt (its tokens were checked by the handle).
    fn prepare_prefill(&mut self, ids: &[u32]) -> (usize, crate::kv::KvCache) {
        let cache = self
            .cache
            .lookup(ids)
            .unwrap_or_else(|| self.loaded.model.new_cache());
        (cache.len(), cache)
    }

    /// Each candidate of `part` with the cached prefix it can reuse: what precedes the
    /// first row the PRM reads, since those rows must be computed, or, for the likelihood
    /// readout, as much of a candidate it extends as was read before (with what it read).
    /// Candidates that share much more with one already in this pass (`in_pass`, or an
    /// earlier one of this part) than the cache gives them are split off to wait for a
    /// later pass ([`super::scoring`], deferral).
    fn prepare_scoring(
        &mut self,
        part: ScorePart,
        in_pass: &[Scoring],
    ) -> (Option<Scoring>, Option<ScorePart>) {
        let prm = self.loaded.prm.clone();
        let mut inputs: Vec<ScoreInput> = Vec::new();
        let mut indices = Vec::new();
        let mut waits = ScorePart {
            job: part.job,
            indices: Vec::new(),
            candidates: Vec::new(),
            tokens: 0,
        };
        let reads_tokens = prm.as_ref().is_some_and(|p| p.reads_tokens());
        // Without a prefix cache a later pass could reuse nothing: no deferral.
        let defer = self.config.defer_shared_candidates && self.config.prefix_cache_entries > 0;
        for (index, (ids, tags)) in part.indices.into_iter().zip(part.candidates) {
            let reusable = prm.as_ref().map_or(0, |p| p.reusable_prefix(&tags));
            let waits_a_pass = defer && {
                let cap = if reads_tokens { usize::MAX } else { reusable };
                let others = in_pass
                    .iter()
                    .flat_map(|s| &s.inputs)
                    .chain(&inputs)
                    .map(|i| i.ids.as_slice());
                defer_from(&ids, self.cache.shared_len(&ids), cap, others)
            };
            if waits_a_pass {
                waits.tokens += ids.len();
                waits.indices.push(index);
                waits.candidates.push((ids, tags));
                continue;
            }
            let found = match reads_tokens {
                true => self
                    .cache
                    .lookup_scored(&ids, prm.as_ref().map_or(1, |p| p.first_token_read(&tags))),
                false => self
                    .cache
                    .lookup(&ids[..(reusable + 1).min(ids.len())])
                    .map(|cache| (cache, Vec::new())),
            };
            let (mut cache, known) =
                found.unwrap_or_else(|| (self.loaded.model.new_cache(), Vec::new()));
            cache.reserve_exact(ids.len());
            indices.push(index);
            inputs.push(ScoreInput {
                ids,
                tags,
                reused: cache.len(),
                known,
                cache,
            });
        }
        let scoring = (!inputs.is_empty()).then_some(Scoring {
            job: part.job,
            indices,
            inputs,
        });
        (scoring, (!waits.indices.is_empty()).then_some(waits))
    }
}

/// Prompt tokens a prefill may run in this pass: what is left of its tenant's share
/// and, unless no prefill or scoring is in the pass yet, of the pass's token budget.
fn chunk_room(allowance: usize, budget: usize, tokens: usize, admitted: &Admitted) -> usize {
    let first = admitted.prefills.is_empty() && admitted.scorings.is_empty();
    if first {
        allowance
    } else {
        allowance.min(budget.saturating_sub(tokens))
    }
}
