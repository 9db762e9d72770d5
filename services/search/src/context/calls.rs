//! How the search's verbs reach the models: prompts and requests built from the
//! query, generate calls split to what a worker accepts and run under the query's call
//! permits, samples scored by the verifier, and what each call cost booked as usage.
//! The verbs themselves, and the budget ledger they reserve on, are in the parent
//! module; this is the plumbing under them.

use super::Context;
use crate::budget::Usage;
use crate::error::Result;
use crate::solve::wave_seed;
use crate::strategy::Scored;
use crate::traits::{Candidate, GenOutput, GenRequest, Generate, Score, ScoreRequest};
use tokio::sync::{OwnedSemaphorePermit, SemaphorePermit};
use tracing::Instrument;

impl<'a, G: Generate, S: Score> Context<'a, G, S> {
    /// `max_tokens`, clamped to what the generator's context leaves after `prompt`.
    pub(super) fn clamp(&self, prompt: &str, max_tokens: u32) -> u32 {
        max_tokens.min(self.limits().room_after(prompt)).max(1)
    }

    /// The prompt that continues the partial solution `steps`.
    pub(super) fn partial_prompt(&self, steps: &[String]) -> String {
        self.format.partial_prompt(self.question(), steps)
    }

    pub(super) fn request(
        &self,
        prompt: String,
        n: u32,
        max_tokens: u32,
        stop: Vec<String>,
        temperature: f32,
        seed: u64,
    ) -> GenRequest {
        GenRequest {
            prompt,
            n,
            temperature,
            top_p: 1.0,
            top_k: 0,
            max_tokens,
            stop,
            seed,
            affinity: self.affinity,
            deadline: self.query.budget().deadline,
            request_id: self.query.request_id().to_string(),
            tenant: self.query.tenant(),
        }
    }

    /// Runs generate calls, at most the query's call limit at once, each split into
    /// calls of at most the generator's `max_samples`; returns what they cost
    /// (`generations`: book each sample as one) and their outputs (one per request, in
    /// order), or the first failure.
    pub(super) async fn generate(
        &self,
        reqs: Vec<GenRequest>,
        generations: bool,
    ) -> (Usage, Result<Vec<GenOutput>>) {
        let generator = self.generator();
        let max_samples = generator.limits().max_samples.max(1);
        let parts: Vec<(usize, GenRequest)> = reqs
            .into_iter()
            .enumerate()
            .flat_map(|(i, r)| split(r, max_samples).into_iter().map(move |p| (i, p)))
            .collect();
        let requests = parts.last().map_or(0, |p| p.0 + 1);
        let results = futures::future::join_all(parts.into_iter().map(|(i, r)| async move {
            let _permit = self.call_permit().await;
            (i, generator.generate(r).instrument(self.round()).await)
        }))
        .await;
        let mut spent = Usage::default();
        let mut outs: Vec<Option<GenOutput>> = vec![None; requests];
        let mut failure = None;
        for (i, r) in results {
            match r {
                Ok(o) => {
                    spent.generator_tokens +=
                        o.samples.iter().map(|s| s.tokens as u64).sum::<u64>();
                    spent.add_generator_flops(o.flops);
                    spent.prompt_tokens += u64::from(o.prompt_tokens);
                    spent.cached_prompt_tokens += o.cached_prompt_tokens as u64;
                    if generations {
                        spent.generations += o.samples.len() as u32;
                    }
                    outs[i] = Some(match outs[i].take() {
                        None => o,
                        Some(mut whole) => {
                            whole.samples.extend(o.samples);
                            whole.prompt_tokens += o.prompt_tokens;
                            whole.cached_prompt_tokens += o.cached_prompt_tokens;
                            whole.flops += o.flops;
                            whole
                        }
                    });
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let outs = match failure {
            Some(e) => Err(e),
            None => Ok(outs.into_iter().flatten().collect()),
        };
        (spent, outs)
    }

    /// Waits for one of the query's call permits, then for one of its client's (when
    /// the caller shares permits across a client's queries).
    pub(super) async fn call_permit(
        &self,
    ) -> (Option<SemaphorePermit<'_>>, Option<OwnedSemaphorePermit>) {
        // The semaphores are never closed, so this always gets the permits.
        let own = self.calls.acquire().await.ok();
        let client = match self.query.client_calls() {
            Some(shared) => shared.clone().acquire_owned().await.ok(),
            None => None,
        };
        (own, client)
    }

    /// Whole-solution samples as candidates, scored if `verifier` is given (within
    /// the caller's reservation; the cost is added to `spent`).
    pub(super) async fn to_scored(
        &self,
        outs: Vec<GenOutput>,
        verifier: Option<&'a S>,
        spent: &mut Usage,
    ) -> Result<Vec<Vec<Scored>>> {
        let mut groups: Vec<Vec<Scored>> = outs
            .into_iter()
            .map(|o| {
                o.samples
                    .into_iter()
                    .map(|s| Scored {
                        answer: self.format.answer(&s.text),
                        text: s.text,
                        score: None,
                    })
                    .collect()
            })
            .collect();
        let Some(verifier) = verifier else {
            return Ok(groups);
        };
        let steps: Vec<Vec<String>> = groups
            .iter()
            .flatten()
            .map(|s| self.format.steps(&s.text))
            .collect();
        let (cost, rewards) = self.call_verifier(verifier, &steps).await;
        spent.verifier_tokens += cost.verifier_tokens;
        spent.add_verifier_flops(cost.verifier_flops);
        let aggregation = self.aggregation();
        for (s, r) in groups.iter_mut().flatten().zip(rewards?) {
            // A sample without steps scores 0.
            s.score = Some(aggregation.apply(&r));
        }
        Ok(groups)
    }

    /// Scores the candidates that have steps, in batches of at most
    /// [`crate::MAX_SCORE_BATCH`], without reserving (the caller holds the
    /// reservation). Returns what the calls cost and the rewards (`[]` for a candidate
    /// without steps), or the first failure.
    pub(super) async fn call_verifier(
        &self,
        verifier: &'a S,
        candidates: &[Vec<String>],
    ) -> (Usage, Result<Vec<Vec<f32>>>) {
        let cost = verifier.cost();
        let idx: Vec<usize> = (0..candidates.len())
            .filter(|&i| !candidates[i].is_empty())
            .collect();
        let bound: u64 = idx
            .iter()
            .map(|&i| cost.bound(self.question(), &candidates[i]))
            .sum();
        let chunks: Vec<&[usize]> = idx.chunks(crate::MAX_SCORE_BATCH).collect();
        let calls = chunks.iter().map(|chunk| async move {
            let _permit = self.call_permit().await;
            verifier
                .score(ScoreRequest {
                    question: self.question().to_string(),
                    candidates: chunk
                        .iter()
                        .map(|&i| Candidate {
                            steps: candidates[i].clone(),
                        })
                        .collect(),
                    deadline: self.query.budget().deadline,
                    affinity: self.affinity,
                    request_id: self.query.request_id().to_string(),
                    tenant: self.query.tenant(),
                })
                .instrument(self.round())
                .await
        });
        let results = futures::future::join_all(calls).await;
        let mut out = vec![Vec::new(); candidates.len()];
        let mut spent = Usage::default();
        let mut failure = None;
        for (chunk, r) in chunks.iter().zip(results) {
            match r {
                Ok(o) => {
                    spent.verifier_tokens += o.tokens;
                    spent.add_verifier_flops(o.flops);
                    for (&i, s) in chunk.iter().zip(o.scores) {
                        out[i] = s;
                    }
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if spent.verifier_tokens > bound {
            tracing::warn!(
                tokens = spent.verifier_tokens,
                bound,
                "verifier used more tokens than its declared bound"
            );
        }
        (spent, failure.map_or(Ok(out), Err))
    }
}

/// `req` as calls of at most `max_samples` samples each. The first part keeps the
/// request's seed and the others get seeds derived from it, so a split call is as
/// reproducible as a whole one.
fn split(req: GenRequest, max_samples: u32) -> Vec<GenRequest> {
    if req.n <= max_samples {
        return vec![req];
    }
    let parts = req.n.div_ceil(max_samples);
    (0..parts)
        .map(|j| GenRequest {
            n: max_samples.min(req.n - j * max_samples),
            seed: if j == 0 {
                req.seed
            } else {
                wave_seed(req.seed, u64::from(j))
            },
            ..req.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_larger_than_a_worker_accepts_is_split_reproducibly() {
        let req = GenRequest {
            prompt: "Q".into(),
            n: 600,
            temperature: 0.8,
            top_p: 1.0,
            top_k: 0,
            max_tokens: 8,
            stop: vec![],
            seed: 7,
            affinity: 1,
            deadline: None,
            request_id: String::new(),
            tenant: 0,
        };
        let parts = split(req.clone(), 256);
        assert_eq!(
            parts.iter().map(|p| p.n).collect::<Vec<_>>(),
            [256, 256, 88]
        );
        assert_eq!(parts[0].seed, 7);
        let seeds: std::collections::HashSet<u64> = parts.iter().map(|p| p.seed).collect();
        assert_eq!(seeds.len(), 3, "every part samples its own stream");
        assert_eq!(split(req.clone(), 256), parts);
        assert_eq!(split(req.clone(), 600), vec![req]);
    }
}
