//! What one query's search carries: the two capabilities, the budget ledger, seeds,
//! timing and the progress channel. Every strategy works through it, so budget
//! accounting, seeding and progress reports are the same for all of them.

use crate::aggregate::Aggregation;
use crate::budget::{Ledger, Reservation, Usage};
use crate::error::{Result, SearchError};
use crate::format::SolutionFormat;
use crate::solve::{wave_seed, Progress};
use crate::strategy::{select, Scored, StrategyKind};
use crate::traits::{Candidate, GenOutput, GenRequest, Generate, Score, ScoreRequest};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub struct Context<'a, G, S> {
    pub generator: &'a G,
    pub verifier: Option<&'a S>,
    pub format: &'a SolutionFormat,
    pub question: &'a str,
    pub ledger: Ledger,
    pub seed: u64,
    pub temperature: f32,
    pub aggregation: Aggregation,
    pub affinity: u64,
    pub request_id: String,
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
    /// Wall time with at least one call in flight.
    pub calls: Duration,
    /// Calls made so far: call `i` samples with seed `wave_seed(seed, i)`.
    pub call_index: u64,
    /// The best answer so far, kept where [`crate::solve()`] can read it if the
    /// strategy is stopped at the deadline.
    pub best: watch::Sender<Option<Snapshot>>,
}

/// The best candidate so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub strategy: StrategyKind,
    pub answer: Option<String>,
    pub solution: String,
    pub score: f32,
    pub tallies: Vec<crate::strategy::Tally>,
    pub candidates: usize,
}

impl<'a, G: Generate, S: Score> Context<'a, G, S> {
    pub fn deadline(&self) -> Option<Instant> {
        self.ledger.budget().deadline
    }

    /// The next call's seed (deterministic in call order).
    pub fn next_seed(&mut self) -> u64 {
        let s = wave_seed(self.seed, self.call_index);
        self.call_index += 1;
        s
    }

    pub fn verifier(&self) -> Result<&'a S> {
        self.verifier
            .ok_or_else(|| SearchError::Unavailable("this strategy needs a verifier".into()))
    }

    /// Charges a strategy's generation cost (the paper's unit) up front.
    pub fn charge_generations(&mut self, generations: u32) -> Result<()> {
        let held = self
            .ledger
            .reserve(Reservation {
                generations,
                tokens: 0,
            })
            .ok_or_else(|| {
                SearchError::invalid(format!(
                    "the strategy costs {generations} generations; budget.max_generations leaves {}",
                    self.ledger.generations_left()
                ))
            })?;
        self.ledger.settle(
            held,
            Usage {
                generations,
                ..Default::default()
            },
        );
        Ok(())
    }

    /// A generate request with this query's settings; `max_tokens` is clamped to what
    /// the generator's context leaves after the prompt.
    pub fn gen_request(
        &mut self,
        prompt: String,
        n: u32,
        max_tokens: u32,
        stop: Vec<String>,
        temperature: f32,
    ) -> GenRequest {
        let max_tokens = max_tokens
            .min(self.generator.limits().room_after(&prompt))
            .max(1);
        GenRequest {
            prompt,
            n,
            temperature,
            top_p: 1.0,
            top_k: 0,
            max_tokens,
            stop,
            seed: self.next_seed(),
            affinity: self.affinity,
            deadline: self.deadline(),
            request_id: self.request_id.clone(),
        }
    }

    /// Runs several generate calls at once, each reserved at `n * max_tokens` first.
    /// Returns None (spending nothing) if their worst case does not fit the budget.
    /// `count_generations`: book each sample as a generation (sampling strategies) or
    /// not (step-level search charges its cost up front).
    pub async fn generate_all(
        &mut self,
        reqs: Vec<GenRequest>,
        count_generations: bool,
    ) -> Result<Option<Vec<GenOutput>>> {
        if self.ledger.expired() {
            return Ok(None);
        }
        let want = Reservation {
            generations: if count_generations {
                reqs.iter().map(|r| r.n).sum()
            } else {
                0
            },
            tokens: reqs.iter().map(|r| r.n as u64 * r.max_tokens as u64).sum(),
        };
        let Some(held) = self.ledger.reserve(want) else {
            return Ok(None);
        };
        let started = Instant::now();
        let results =
            futures::future::join_all(reqs.into_iter().map(|r| self.generator.generate(r))).await;
        self.calls += started.elapsed();
        let mut outs = Vec::with_capacity(results.len());
        let mut spent = Usage::default();
        let mut failure = None;
        for r in results {
            match r {
                Ok(o) => {
                    spent.generator_tokens +=
                        o.samples.iter().map(|s| s.tokens as u64).sum::<u64>();
                    spent.flops += o.flops;
                    spent.cached_prompt_tokens += o.cached_prompt_tokens as u64;
                    if count_generations {
                        spent.generations += o.samples.len() as u32;
                    }
                    outs.push(o);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        self.ledger.settle(held, spent);
        match failure {
            Some(e) => Err(e),
            None => Ok(Some(outs)),
        }
    }

    /// Scores candidates (each a list of steps); reserves the exact token bound first.
    /// Returns None if that does not fit. Candidates without steps get no call and
    /// score `[]`.
    pub async fn score_all(
        &mut self,
        candidates: Vec<Vec<String>>,
    ) -> Result<Option<Vec<Vec<f32>>>> {
        let ver = self.verifier()?;
        let cost = ver.cost();
        let idx: Vec<usize> = (0..candidates.len())
            .filter(|&i| !candidates[i].is_empty())
            .collect();
        let mut out = vec![Vec::new(); candidates.len()];
        if idx.is_empty() {
            return Ok(Some(out));
        }
        let bound: u64 = idx
            .iter()
            .map(|&i| cost.bound(self.question, &candidates[i]))
            .sum();
        if self.ledger.expired() {
            return Ok(None);
        }
        let Some(held) = self.ledger.reserve(Reservation {
            generations: 0,
            tokens: bound,
        }) else {
            return Ok(None);
        };
        let started = Instant::now();
        let chunks: Vec<Vec<usize>> = idx
            .chunks(crate::MAX_SCORE_BATCH)
            .map(|c| c.to_vec())
            .collect();
        let calls = chunks.iter().map(|chunk| {
            ver.score(ScoreRequest {
                question: self.question.to_string(),
                candidates: chunk
                    .iter()
                    .map(|&i| Candidate {
                        steps: candidates[i].clone(),
                    })
                    .collect(),
                deadline: self.deadline(),
                affinity: self.affinity,
                request_id: self.request_id.clone(),
            })
        });
        let results = futures::future::join_all(calls).await;
        self.calls += started.elapsed();
        let mut spent = Usage::default();
        let mut failure = None;
        for (chunk, r) in chunks.iter().zip(results) {
            match r {
                Ok(o) => {
                    spent.verifier_tokens += o.tokens;
                    spent.flops += o.flops;
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
        self.ledger.settle(held, spent);
        match failure {
            Some(e) => Err(e),
            None => Ok(Some(out)),
        }
    }

    /// Records the best answer so far under `strategy`'s selection rule and reports
    /// it to the progress channel, if any.
    pub fn report(&self, strategy: StrategyKind, candidates: &[Scored], message: String) {
        let best = select(strategy.rule(), candidates);
        if let Some(tx) = &self.progress {
            let _ = tx.send(Progress {
                best_answer: best.as_ref().and_then(|b| b.answer.clone()),
                best_score: best.as_ref().map_or(0.0, |b| b.score),
                usage: self.ledger.used(),
                message,
            });
        }
        if let Some(b) = best {
            self.best.send_replace(Some(Snapshot {
                strategy,
                solution: candidates[b.winner].text.clone(),
                answer: b.answer,
                score: b.score,
                tallies: b.tallies,
                candidates: candidates.len(),
            }));
        }
    }
}
