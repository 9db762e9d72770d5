//! Compute-optimal over a ladder of generator models (`ponder eval --flops`): every
//! (model, strategy, N) as one option with its measured FLOPs, the policy that picks an
//! option per predicted difficulty bin and FLOPs budget, and its 2-fold cross-validated
//! accuracy.
//!
//! Why FLOPs: a generation of a 1.3M-parameter model and one of a 47K-parameter model
//! are not the same spend, so models are compared at matched inference FLOPs (Snell et
//! al. §7). Costs are measured, not modelled: each draw recorded what its samples and
//! their scoring cost, and an option's cost on a question is its share of that draw
//! (the verifier's share only for strategies that score; majority does not).
//!
//! Difficulty is predicted from the cheapest model's probes (its draw's first
//! [`PROBES`] samples and their PRM scores), so routing needs no ground truth. The
//! probes are paid by every routed question; an option on another model discards them.
//! A generations budget `b` is read as the FLOPs of `b` scored samples of the default
//! (cheapest) model in that bin, with at most `b` generations (docs/strategies.md, "Over
//! model sizes"): a default query costs what it did, and moves to a larger model only
//! where that is more accurate for the same compute.

use super::draws::Draw;
use super::fit::PROBES;
use super::Record;
use ponder_search::replay::replayable;
use ponder_search::StrategyKind;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One generator model of the ladder with its draws (index-aligned with the questions)
/// and greedy answers.
pub struct Rung {
    pub model: String,
    pub parameters: u64,
    pub training_flops: f64,
    pub draws: Vec<Draw>,
    pub greedy: Vec<Greedy>,
    /// Beam-search and other runs on this model (rung 0 only), by (question, spec, N).
    pub runs: Vec<Record>,
}

/// One greedy (temperature 0) answer: the large model's baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Greedy {
    pub model: String,
    pub index: usize,
    pub question: String,
    pub answer: String,
    pub correct: bool,
    pub tokens: u64,
    pub flops: f64,
    pub latency_s: f64,
    /// Estimated CPU-seconds ([`cpu_per_wall`]).
    pub cpu_s: f64,
}

/// What an option cost and earned on one question.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    pub correct: bool,
    pub generator_flops: f64,
    pub verifier_flops: f64,
    /// An estimate: the draw's wall time pro rata, times cores over draws in flight.
    pub seconds: f64,
    pub generations: u32,
}

impl Outcome {
    pub fn flops(&self) -> f64 {
        self.generator_flops + self.verifier_flops
    }

    fn plus(mut self, o: &Outcome) -> Self {
        self.generator_flops += o.generator_flops;
        self.verifier_flops += o.verifier_flops;
        self.seconds += o.seconds;
        self.generations += o.generations;
        self
    }
}

/// Wall seconds of one of `in_flight` questions run at once -> CPU-seconds: this
/// machine's cores shared evenly among them (an estimate: it assumes the cores were
/// busy with this evaluation alone).
pub fn cpu_per_wall(in_flight: usize) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores as f64 / in_flight.max(1) as f64
}

/// Draws run this many questions at once (`super::run`).
const DRAWS_IN_FLIGHT: usize = super::CONCURRENCY.div_ceil(4);

/// A way to answer: `strategy` with `n` generations on rung `rung`.
#[derive(Debug, Clone, PartialEq)]
pub struct Option_ {
    pub rung: usize,
    pub strategy: StrategyKind,
    pub n: u32,
}

pub struct Ladder {
    pub rungs: Vec<Rung>,
    pub verifier_parameters: u64,
    pub questions: usize,
    /// (rung, question, strategy spec, N) -> position in that rung's runs.
    runs: HashMap<(usize, usize, String, u32), usize>,
}

impl Ladder {
    pub fn new(rungs: Vec<Rung>, verifier_parameters: u64) -> anyhow::Result<Self> {
        anyhow::ensure!(!rungs.is_empty(), "the ladder has no model");
        let questions = rungs[0].draws.len();
        for r in &rungs {
            anyhow::ensure!(
                r.draws.len() == questions && r.greedy.len() == questions,
                "{}: {} draws and {} greedy answers for {questions} questions",
                r.model,
                r.draws.len(),
                r.greedy.len()
            );
            for (a, b) in r.draws.iter().zip(&rungs[0].draws) {
                anyhow::ensure!(
                    a.question == b.question,
                    "{}: another question set",
                    r.model
                );
            }
        }
        let mut runs = HashMap::new();
        for (i, r) in rungs.iter().enumerate() {
            for (k, x) in r.runs.iter().enumerate() {
                runs.insert((i, x.index, x.strategy.clone(), x.budget), k);
            }
        }
        Ok(Self {
            rungs,
            verifier_parameters,
            questions,
            runs,
        })
    }

    pub fn level(&self, q: usize) -> u8 {
        self.rungs[0].draws[q].level
    }

    /// Every option the evaluation can replay or has run, cheapest rung first.
    pub fn options(&self, budgets: &[u32], strategies: &[StrategyKind]) -> Vec<Option_> {
        let mut out = Vec::new();
        for (i, r) in self.rungs.iter().enumerate() {
            let max = r.draws.iter().map(|d| d.samples.len()).min().unwrap_or(0) as u32;
            for &s in strategies {
                for &n in budgets.iter().filter(|&&n| n <= max) {
                    out.push(Option_ {
                        rung: i,
                        strategy: s,
                        n,
                    });
                }
            }
            let mut runs: Vec<(String, u32)> = r
                .runs
                .iter()
                .map(|x| (x.strategy.clone(), x.budget))
                .collect();
            runs.sort();
            runs.dedup();
            for (spec, n) in runs {
                if let Ok(strategy) = StrategyKind::parse(&spec) {
                    out.push(Option_ {
                        rung: i,
                        strategy,
                        n,
                    });
                }
            }
            if r.greedy.len() == self.questions {
                out.push(Option_ {
                    rung: i,
                    strategy: StrategyKind::Greedy,
                    n: 1,
                });
            }
        }
        out
    }

    /// The run of option `o` on question `q`, if it was run rather than replayed.
    fn run(&self, o: &Option_, q: usize) -> Option<&Record> {
        let k = self.runs.get(&(o.rung, q, o.strategy.spec(), o.n))?;
        Some(&self.rungs[o.rung].runs[*k])
    }

    /// What `o` costs and earns on question `q`, alone (no probes).
    pub fn outcome(&self, o: &Option_, q: usize) -> anyhow::Result<Outcome> {
        let d = &self.rungs[o.rung].draws[q];
        if o.strategy == StrategyKind::Greedy {
            let g = &self.rungs[o.rung].greedy[q];
            return Ok(Outcome {
                correct: g.correct,
                generator_flops: g.flops,
                verifier_flops: 0.0,
                seconds: g.cpu_s,
                generations: 1,
            });
        }
        if let Some(r) = self.run(o, q) {
            let verifier_flops =
                ponder_search::traits::forward_flops(self.verifier_parameters, r.verifier_tokens);
            return Ok(Outcome {
                correct: r.correct,
                generator_flops: (r.flops - verifier_flops).max(0.0),
                verifier_flops,
                seconds: r.latency_s * cpu_per_wall(super::CONCURRENCY),
                generations: r.generations,
            });
        }
        let r = d.replay(q, o.strategy, o.n)?;
        Ok(self.share(d, r.generations, o.strategy.needs_verifier(), r.correct))
    }

    /// `generations` samples of draw `d`, scored or not, pro rata.
    fn share(&self, d: &Draw, generations: u32, scored: bool, correct: bool) -> Outcome {
        let share = f64::from(generations) / d.samples.len() as f64;
        let verifier =
            ponder_search::traits::forward_flops(self.verifier_parameters, d.verifier_tokens);
        let generator = (d.flops - verifier).max(0.0);
        let time_share = if scored || d.flops == 0.0 {
            1.0
        } else {
            generator / d.flops
        };
        Outcome {
            correct,
            generator_flops: generator * share,
            verifier_flops: if scored { verifier * share } else { 0.0 },
            seconds: d.latency_s * share * time_share * cpu_per_wall(DRAWS_IN_FLIGHT),
            generations,
        }
    }

    /// The probes compute-optimal runs on question `q`: the cheapest model's first
    /// [`PROBES`] samples, scored.
    pub fn probes(&self, q: usize) -> Outcome {
        let d = &self.rungs[0].draws[q];
        self.share(d, PROBES.min(d.samples.len() as u32), true, false)
    }

    /// The probes' mean PRM score on question `q`.
    pub fn probe_mean(&self, q: usize) -> f32 {
        self.rungs[0].draws[q].probe_mean(PROBES, PROBES)
    }

    /// What compute-optimal pays and earns when routed to `o` on question `q`: on the
    /// cheapest model the probes are the option's first samples (a strategy that does
    /// not score still paid for scoring them); on another model they come on top.
    pub fn routed(&self, o: &Option_, q: usize) -> anyhow::Result<Outcome> {
        let alone = self.outcome(o, q)?;
        let probes = self.probes(q);
        Ok(if o.rung == 0 && replayable(o.strategy) {
            let mut out = alone;
            if !o.strategy.needs_verifier() {
                out.verifier_flops += probes.verifier_flops;
            }
            out.generations = out.generations.max(probes.generations);
            out
        } else {
            alone.plus(&probes)
        })
    }

    /// Generations compute-optimal spends routed to `o`, probes included: on the
    /// cheapest model a drawn option's first samples are the probes.
    pub fn routed_generations(&self, o: &Option_) -> u32 {
        if o.rung == 0 && replayable(o.strategy) {
            o.n.max(PROBES)
        } else {
            o.n + PROBES
        }
    }

    /// The options compute-optimal may route to: on the cheapest model, at least the
    /// probes' N (they are its first samples).
    pub fn routable(&self, options: &[Option_]) -> Vec<Option_> {
        options
            .iter()
            .filter(|o| o.rung != 0 || o.n >= PROBES || o.strategy == StrategyKind::Greedy)
            .cloned()
            .collect()
    }
}
