//! The batch loop of a recorded node, simulated: when each call would finish on the
//! real engine, given the latency model and everything else the node is serving.
//!
//! A plain state machine over time in seconds, so the same code runs in real time
//! (the node's actor sleeps until [`BatchSim::next_event`]) and in virtual time
//! (`ponder fit-latency` checks concurrent calls against it, and the tests assert it).
//!
//! What it models, after the engine's loop (docs/engine.md): one loop per node; a
//! generate call waits until its samples fit in `max_active` running sequences, then
//! its prefill holds the loop for its cost; score calls wait for the pass in progress,
//! then every one waiting joins one pass (up to the engine's `max_batch_tokens`, as its
//! admission packs them) and all are answered when it ends; decode steps advance
//! every running sequence by one token, at a cost that grows with the batch and with
//! the context the sequences attend to; a call is answered when its last sample has
//! all its recorded tokens. Between events, progress is a fluid (fractions of a step,
//! in closed form: `k` steps take `a k + b k^2 / 2`), so timer granularity never
//! accumulates into error.

use super::latency::{GenerateCost, ScoreCost};
use std::collections::{HashMap, VecDeque};

/// What a call asks of the loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    Generate {
        prompt_tokens: u32,
        uncached_prompt_tokens: u32,
        /// Each sample's recorded token count.
        sample_tokens: Vec<u32>,
    },
    Score {
        tokens: u64,
        candidates: u32,
        /// [`super::latency::score_attended_context`] of its candidates.
        attended_context: f64,
    },
}

#[derive(Debug)]
struct Running {
    job: u64,
    /// Decode steps this sequence still needs.
    left: f64,
    /// Tokens of context it attends to (prompt and sampled so far).
    context: f64,
}

/// Counters the node exports as its worker's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SimCounters {
    pub decode_steps: f64,
    pub last_batch: usize,
    pub generated_tokens: u64,
    pub prompt_tokens: u64,
    pub scored_tokens: u64,
}

pub struct BatchSim {
    generate: Option<GenerateCost>,
    score: Option<ScoreCost>,
    max_active: usize,
    max_batch_tokens: u64,
    /// Time accounted for.
    now: f64,
    /// A prefill or score pass holds the loop until then.
    busy_until: f64,
    running: Vec<Running>,
    waiting: VecDeque<(u64, Work)>,
    /// Sequences still running per generate job.
    open: HashMap<u64, usize>,
    /// Jobs that end at a known time (score passes; generate calls with no tokens).
    timed: Vec<(f64, u64)>,
    pub counters: SimCounters,
}

impl BatchSim {
    pub fn new(
        generate: Option<GenerateCost>,
        score: Option<ScoreCost>,
        max_active: usize,
        max_batch_tokens: usize,
    ) -> Self {
        Self {
            generate,
            score,
            max_active: max_active.max(1),
            max_batch_tokens: max_batch_tokens.max(1) as u64,
            now: 0.0,
            busy_until: 0.0,
            running: vec![],
            waiting: VecDeque::new(),
            open: HashMap::new(),
            timed: vec![],
            counters: SimCounters::default(),
        }
    }

    /// Calls accepted and not yet admitted to the loop.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Accepts call `job` at time `at` (not before the last event); returns the jobs that
    /// finished up to `at`.
    pub fn submit(&mut self, at: f64, job: u64, work: Work) -> Vec<u64> {
        let done = self.advance(at);
        self.waiting.push_back((job, work));
        self.admit();
        done
    }

    /// Forgets `job` (its caller went away): its sequences leave the batch.
    pub fn cancel(&mut self, job: u64) {
        self.waiting.retain(|(j, _)| *j != job);
        self.running.retain(|r| r.job != job);
        self.open.remove(&job);
        self.timed.retain(|(_, j)| *j != job);
        self.admit();
    }

    /// When the next call would finish (or waiting ones start a pass) if nothing else
    /// arrived.
    pub fn next_event(&self) -> Option<f64> {
        let pass_ends =
            (!self.waiting.is_empty() && self.busy_until > self.now).then_some(self.busy_until);
        let timed = self
            .timed
            .iter()
            .map(|(t, _)| *t)
            .chain(pass_ends)
            .min_by(f64::total_cmp);
        let decode = self
            .next_completion()
            .map(|dt| self.now.max(self.busy_until) + dt);
        match (timed, decode) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the loop up to time `t`; returns the jobs that finished, in order.
    pub fn advance(&mut self, t: f64) -> Vec<u64> {
        let mut done = vec![];
        while let Some(next) = self.next_event().filter(|next| *next <= t) {
            self.decode_until(next);
            self.now = self.now.max(next);
            let finished_timed: Vec<u64> = self
                .timed
                .iter()
                .filter(|(at, _)| *at <= next)
                .map(|(_, j)| *j)
                .collect();
            self.timed.retain(|(at, _)| *at > next);
            done.extend(finished_timed);
            let mut ended = vec![];
            self.running.retain(|r| {
                let keep = r.left > 1e-6;
                if !keep {
                    ended.push(r.job);
                }
                keep
            });
            for job in ended {
                if let Some(open) = self.open.get_mut(&job) {
                    *open -= 1;
                    if *open == 0 {
                        self.open.remove(&job);
                        done.push(job);
                    }
                }
            }
            self.admit();
        }
        self.decode_until(t);
        self.now = self.now.max(t);
        done
    }

    /// `(a, b)` of the running batch's decode curve (`k` steps take `a k + b k^2 / 2`).
    fn curve(&self) -> Option<(f64, f64)> {
        let cost = self.generate.filter(|_| !self.running.is_empty())?;
        let context: f64 = self.running.iter().map(|r| r.context).sum();
        let (a, b) = cost.steps_curve(self.running.len(), context);
        Some((a.max(1e-12), b.max(0.0)))
    }

    /// Decoding time until the first running sequence ends.
    fn next_completion(&self) -> Option<f64> {
        let (a, b) = self.curve()?;
        let least = self.running.iter().map(|r| r.left).fold(f64::MAX, f64::min);
        Some(a * least + b * least * least / 2.0)
    }

    /// Decodes every running sequence from the last accounted time to `t` (none while
    /// a pass holds the loop).
    fn decode_until(&mut self, t: f64) {
        let start = self.now.max(self.busy_until);
        let Some((a, b)) = self.curve() else {
            return;
        };
        if t <= start {
            return;
        }
        let batch = self.running.len();
        // The inverse of a k + b k^2 / 2 = dt, in the form that is stable as b -> 0.
        let dt = t - start;
        let steps = 2.0 * dt / (a + (a * a + 2.0 * b * dt).sqrt());
        for r in &mut self.running {
            let taken = steps.min(r.left);
            r.left -= taken;
            r.context += taken;
        }
        self.counters.decode_steps += steps;
        self.counters.last_batch = batch;
        self.now = t;
    }

    /// Admits waiting calls while their samples fit in the batch (one always fits when
    /// none runs); score calls once the loop is free, as one pass.
    fn admit(&mut self) {
        while let Some((_, work)) = self.waiting.front() {
            match work {
                Work::Generate { sample_tokens, .. } => {
                    let needs = sample_tokens.len();
                    if needs > 0
                        && !self.running.is_empty()
                        && self.running.len() + needs > self.max_active
                    {
                        return;
                    }
                }
                Work::Score { .. } if self.busy_until > self.now => return,
                Work::Score { .. } => {
                    self.score_pass();
                    continue;
                }
            }
            let Some((
                job,
                Work::Generate {
                    prompt_tokens,
                    uncached_prompt_tokens,
                    sample_tokens,
                },
            )) = self.waiting.pop_front()
            else {
                unreachable!("the front is a generate call (matched above)");
            };
            let cost = self
                .generate
                .expect("a generator recording has a generate cost");
            let start = self.now.max(self.busy_until);
            self.busy_until = start + cost.prefill(uncached_prompt_tokens);
            // Every prompt token, cached or not, as the engine counts them
            // (`ponder_tokens_total{kind="prompt"}`).
            self.counters.prompt_tokens += u64::from(prompt_tokens);
            let decoding: Vec<u32> = sample_tokens.into_iter().filter(|t| *t > 0).collect();
            self.counters.generated_tokens += decoding.iter().map(|t| u64::from(*t)).sum::<u64>();
            if decoding.is_empty() {
                self.timed.push((self.busy_until, job));
            } else {
                self.open.insert(job, decoding.len());
                self.running.extend(decoding.into_iter().map(|t| Running {
                    job,
                    left: f64::from(t),
                    context: f64::from(prompt_tokens),
                }));
            }
        }
    }

    /// One scoring pass from now: the score calls at the front of the queue while the
    /// pass has fewer than `max_batch_tokens` tokens (the engine admits the call that
    /// crosses it), all answered when it ends.
    fn score_pass(&mut self) {
        let cost = self.score.expect("a verifier recording has a score cost");
        let (mut tokens, mut candidates, mut context) = (0u64, 0u32, 0.0);
        let mut jobs = vec![];
        while tokens < self.max_batch_tokens {
            let Some((_, Work::Score { .. })) = self.waiting.front() else {
                break;
            };
            let Some((
                job,
                Work::Score {
                    tokens: t,
                    candidates: c,
                    attended_context: a,
                },
            )) = self.waiting.pop_front()
            else {
                unreachable!("the front is a score call (matched above)");
            };
            tokens += t;
            candidates += c;
            context += a;
            jobs.push(job);
        }
        self.busy_until = self.now + cost.pass(tokens, candidates, context);
        self.counters.scored_tokens += tokens;
        self.timed
            .extend(jobs.into_iter().map(|job| (self.busy_until, job)));
    }
}

/// The makespan of `works` all submitted at time 0, in virtual time: what the model
/// predicts for calls that arrive together.
pub fn makespan(
    generate: Option<GenerateCost>,
    score: Option<ScoreCost>,
    max_active: usize,
    max_batch_tokens: usize,
    works: Vec<Work>,
) -> f64 {
    let mut sim = BatchSim::new(generate, score, max_active, max_batch_tokens);
    let count = works.len();
    for (i, w) in works.into_iter().enumerate() {
        sim.submit(0.0, i as u64, w);
    }
    let mut finished = 0;
    let mut last = 0.0;
    while finished < count {
        let Some(t) = sim.next_event() else { break };
        finished += sim.advance(t).len();
        last = t;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine's `max_batch_tokens` for the bundled generators.
    const TOKENS: usize = 2048;

    const COST: GenerateCost = GenerateCost {
        call_s: 0.01,
        prefill_token_s: 0.001,
        step_s: 0.002,
        step_sequence_s: 0.001,
        attention_token_s: 0.0,
    };

    fn gen(prompt: u32, tokens: &[u32]) -> Work {
        Work::Generate {
            prompt_tokens: prompt,
            uncached_prompt_tokens: prompt,
            sample_tokens: tokens.to_vec(),
        }
    }

    #[test]
    fn a_call_alone_takes_what_the_model_says() {
        // Prefill 0.01 + 0.02; then 10 steps of 2 sequences (0.004 each), 10 of one
        // (0.003 each).
        let t = makespan(Some(COST), None, 64, TOKENS, vec![gen(20, &[10, 20])]);
        assert!((t - (0.03 + 0.04 + 0.03)).abs() < 1e-9, "{t}");
        // With attention, the simulation still adds up to the formula for a call alone.
        let cost = GenerateCost {
            attention_token_s: 1e-5,
            ..COST
        };
        let t = makespan(Some(cost), None, 64, TOKENS, vec![gen(20, &[10, 20, 35])]);
        let m = super::super::latency::GenerateMeasure {
            n: 3,
            prompt_tokens: 20,
            uncached_prompt_tokens: 20,
            longest: 35,
            sampled_tokens: 65,
            attended_context: super::super::latency::attended_context(20, [10, 20, 35]),
            seconds: 0.0,
        };
        assert!(
            (cost.alone(&m) - t).abs() < 1e-6 * t,
            "{} vs {t}",
            cost.alone(&m)
        );
    }

    #[test]
    fn calls_together_share_decode_steps_and_queue_past_the_batch() {
        let alone = makespan(Some(COST), None, 64, TOKENS, vec![gen(0, &[100])]);
        let two = makespan(
            Some(COST),
            None,
            64,
            TOKENS,
            vec![gen(0, &[100]), gen(0, &[100])],
        );
        // Sharing: two together cost far less than two in turn, more than one.
        assert!(two > alone && two < 1.5 * alone, "{alone} {two}");
        // A batch of one sequence: the second waits for the first.
        let serial = makespan(
            Some(COST),
            None,
            1,
            TOKENS,
            vec![gen(0, &[100]), gen(0, &[100])],
        );
        assert!((serial - 2.0 * alone).abs() < 1e-9, "{serial} {alone}");
    }

    #[test]
    fn events_come_in_order_and_a_cancelled_call_frees_the_batch() {
        let mut sim = BatchSim::new(Some(COST), None, 2, TOKENS);
        assert!(sim.submit(0.0, 1, gen(0, &[50, 50])).is_empty());
        assert!(sim.submit(0.0, 2, gen(0, &[5])).is_empty());
        assert_eq!((sim.running(), sim.waiting()), (2, 1));
        sim.cancel(1);
        assert_eq!((sim.running(), sim.waiting()), (1, 0));
        let t = sim.next_event().unwrap();
        assert_eq!(sim.advance(t - 1e-6), Vec::<u64>::new());
        assert_eq!(sim.advance(t), vec![2]);
        assert_eq!(sim.next_event(), None);
        let score = ScoreCost {
            call_s: 0.005,
            token_s: 1e-4,
            candidate_s: 0.0,
            attention_token_s: 0.0,
        };
        let mut v = BatchSim::new(None, Some(score), 8, TOKENS);
        v.submit(
            0.0,
            7,
            Work::Score {
                tokens: 100,
                candidates: 2,
                attended_context: 5000.0,
            },
        );
        v.submit(
            0.0,
            8,
            Work::Score {
                tokens: 100,
                candidates: 2,
                attended_context: 5000.0,
            },
        );
        // Score passes hold the loop in turn.
        assert_eq!(v.advance(0.0149), Vec::<u64>::new());
        assert_eq!(v.advance(0.0151), vec![7]);
        assert_eq!(v.advance(0.031), vec![8]);
        assert_eq!(v.counters.scored_tokens, 200);
    }

    fn score(tokens: u64) -> Work {
        Work::Score {
            tokens,
            candidates: 1,
            attended_context: 0.0,
        }
    }

    #[test]
    fn score_calls_that_wait_share_one_pass_up_to_the_token_budget() {
        let cost = ScoreCost {
            call_s: 0.01,
            token_s: 1e-4,
            candidate_s: 0.0,
            attention_token_s: 0.0,
        };
        let mut v = BatchSim::new(None, Some(cost), 8, 1000);
        // The first starts a pass alone (0.01 + 0.01): the next three wait for it.
        v.submit(0.0, 1, score(100));
        v.submit(0.001, 2, score(600));
        v.submit(0.002, 3, score(500));
        v.submit(0.003, 4, score(100));
        assert_eq!((v.waiting(), v.advance(0.0199)), (3, vec![]));
        // At 0.02 calls 2 and 3 start one pass: 1,100 tokens, past the budget with the
        // second, so call 4 waits again. One call cost for both: 0.01 + 0.11.
        assert_eq!(v.advance(0.0201), vec![1]);
        assert_eq!(v.waiting(), 1);
        assert_eq!(v.advance(0.1399), Vec::<u64>::new());
        assert_eq!(v.advance(0.1401), vec![2, 3]);
        assert_eq!(v.advance(0.1601), vec![4]);
        assert_eq!(v.next_event(), None);
        assert_eq!(v.counters.scored_tokens, 1300);
        // Cancelling every call of a pass still lets the ones waiting start after it.
        let mut w = BatchSim::new(None, Some(cost), 8, 1000);
        w.submit(0.0, 1, score(100));
        w.submit(0.0, 2, score(100));
        w.cancel(1);
        assert_eq!(w.next_event(), Some(0.02));
        assert_eq!(w.advance(0.05), vec![2]);
    }
}
