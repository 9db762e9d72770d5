//! Scoring requests in parts.
//!
//! Why: a scoring request is the largest unit of work a worker takes (up to 256
//! candidates, each the question plus its steps; with the bundled character-level PRM
//! one DVTS round of 256 paths is some 25,000 tokens). Admitted whole, it made one pass
//! of seconds, and every other tenant's request, however small, waited for that pass
//! (docs/security.md, finding H2). So a request is cut on arrival into parts of at
//! most the pass's token budget (`max_batch_tokens`); each part queues under the
//! request's tenant, the fair queue lets other tenants in between parts, and the answer
//! goes out when the last part has been scored. A candidate's scores do not depend on
//! the pass it ran in (each candidate is its own segment over its own cache).
//!
//! Deferral: candidates of one question share long prefixes (the question, and the
//! early steps that most samples of a confident generator agree on), but a pass cannot
//! reuse KV that the same pass computes. So a candidate whose prefix shared with one
//! already in the pass is at least [`DEFER_MIN_TOKENS`] longer than what the prefix
//! cache gives it waits for a later pass ([`defer_from`]), by when that one is in the
//! prefix cache with its readings, and runs only what it does not share: one more pass
//! of latency for it, far fewer tokens through the model for the request.

use super::batch_loop::Worker;
use super::sequence::{EncodedCandidate, ScoreJob, ScorePart, ScoreReply, Scoring, Waiting};
use super::types::ScoreResponse;
use crate::error::EngineError;
use crate::prefix_cache::{common_prefix, TokenLogp};
use crate::prm::Chain;

/// Shared tokens beyond its cached prefix that make a candidate wait for a later pass
/// (about a step of a character-level solution; less is not worth a pass).
pub(super) const DEFER_MIN_TOKENS: usize = 16;

/// `candidates` in order, as parts of at most `budget` tokens each (a candidate longer
/// than that is a part of its own). Parts carry `job` and their first index.
pub(super) fn split(job: u64, candidates: Vec<EncodedCandidate>, budget: usize) -> Vec<ScorePart> {
    let mut parts: Vec<ScorePart> = Vec::new();
    for (index, candidate) in candidates.into_iter().enumerate() {
        let len = candidate.0.len();
        match parts.last_mut() {
            Some(part) if part.tokens + len <= budget => {
                part.tokens += len;
                part.candidates.push(candidate);
                part.indices.push(index);
            }
            _ => parts.push(ScorePart {
                job,
                indices: vec![index],
                candidates: vec![candidate],
                tokens: len,
            }),
        }
    }
    parts
}

/// Whether a candidate of `ids`, of which the prefix cache holds `reused` tokens, should
/// wait for a later pass because it shares at least [`DEFER_MIN_TOKENS`] more with a
/// candidate already in this pass (`in_pass`), of which it could then reuse `reusable`
/// at most (the PRM's reusable prefix; `usize::MAX` for a likelihood readout, which
/// reuses what it read of any prefix).
pub(super) fn defer_from<'a>(
    ids: &[u32],
    reused: usize,
    reusable: usize,
    in_pass: impl IntoIterator<Item = &'a [u32]>,
) -> bool {
    let cap = reusable.min(ids.len().saturating_sub(1));
    if cap < reused + DEFER_MIN_TOKENS {
        return false;
    }
    in_pass
        .into_iter()
        .any(|other| common_prefix(ids, other).min(cap) >= reused + DEFER_MIN_TOKENS)
}

impl Worker {
    /// Queues a scoring request as parts under `tenant`.
    pub(super) fn accept_score(
        &mut self,
        tenant: u64,
        candidates: Vec<EncodedCandidate>,
        reply: ScoreReply,
    ) {
        let job = self.next_score_job;
        self.next_score_job += 1;
        let count = candidates.len();
        let parts = split(job, candidates, self.config.max_batch_tokens);
        self.score_jobs.insert(
            job,
            ScoreJob {
                scores: vec![Vec::new(); count],
                tokens: 0,
                parts_left: parts.len(),
                reply,
            },
        );
        for part in parts {
            self.waiting.push(tenant, Waiting::Score(part));
        }
    }

    /// Files the scores of this pass's parts with their requests, and answers the
    /// requests whose last part this was. `scores` holds one reading per tag,
    /// candidates in pass order; `token_logp` (likelihood readout only) what was read
    /// for each candidate's tokens.
    pub(super) fn answer_scorings(
        &mut self,
        scorings: Vec<Scoring>,
        scores: Vec<f32>,
        token_logp: Vec<Vec<f32>>,
    ) {
        let mut scores = scores.into_iter();
        let mut token_logp = token_logp.into_iter();
        let prm = self.loaded.prm.clone();
        let chain = prm.as_ref().map_or(Chain::None, |p| p.config().chain);
        for part in scorings {
            let mut per_candidate = Vec::with_capacity(part.inputs.len());
            let mut tokens = 0;
            for input in part.inputs {
                per_candidate.push(chain.apply(scores.by_ref().take(input.tags.len()).collect()));
                tokens += input.ids.len() - input.reused;
                let prm = prm.as_deref();
                match token_logp.next() {
                    // The whole candidate with what was read: a candidate extending it
                    // (this path's next step) runs only its new tokens.
                    Some(values) => self.cache.insert_scored(
                        input.ids,
                        input.cache,
                        TokenLogp {
                            from: prm.map_or(1, |p| p.first_token_read(&input.tags)),
                            values: values.into(),
                        },
                    ),
                    // The question prefix, for the next scoring of this question.
                    None => {
                        let keep = prm.map_or(0, |p| p.reusable_prefix(&input.tags));
                        self.cache
                            .insert(input.ids[..keep].to_vec(), input.cache.truncated(keep))
                    }
                }
            }
            self.stats.scored_tokens += tokens as u64;
            // A job that is gone was cancelled or failed; its scores go nowhere.
            let Some(job) = self.score_jobs.get_mut(&part.job) else {
                continue;
            };
            job.tokens += tokens;
            for (&index, s) in part.indices.iter().zip(per_candidate) {
                job.scores[index] = s;
            }
            job.parts_left -= 1;
            if job.parts_left == 0 {
                let job = self.score_jobs.remove(&part.job).expect("looked up above");
                self.stats.completed_requests += 1;
                let _ = job.reply.send(Ok(ScoreResponse {
                    scores: job.scores,
                    tokens: job.tokens as u32,
                }));
            }
        }
    }

    /// Fails the scoring requests of this pass's parts (their other parts are dropped
    /// from the queue as cancelled); returns how many requests failed.
    pub(super) fn fail_scorings(&mut self, scorings: Vec<Scoring>, msg: &str) -> usize {
        let mut failed = 0;
        for part in scorings {
            if let Some(job) = self.score_jobs.remove(&part.job) {
                let _ = job.reply.send(Err(EngineError::Internal(msg.to_string())));
                failed += 1;
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(len: usize) -> EncodedCandidate {
        (vec![7; len], vec![len - 1])
    }

    #[test]
    fn parts_keep_order_and_stay_within_the_budget() {
        let lens = [30, 50, 40, 200, 10, 10, 90];
        let parts = split(9, lens.iter().map(|&l| candidate(l)).collect(), 100);
        let shape: Vec<(usize, Vec<usize>, usize)> = parts
            .iter()
            .map(|p| {
                assert_eq!(p.job, 9);
                let lens = p.candidates.iter().map(|c| c.0.len()).collect();
                (p.indices[0], lens, p.tokens)
            })
            .collect();
        assert_eq!(
            shape,
            [
                (0, vec![30, 50], 80),
                (2, vec![40], 40),
                (3, vec![200], 200),
                (4, vec![10, 10], 20),
                (6, vec![90], 90),
            ]
        );
    }
}
