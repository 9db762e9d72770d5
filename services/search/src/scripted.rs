//! Scripted test doubles of the two traits, [`Generate`] and [`Score`].
//!
//! These are doubles of the *traits*, not of any service: a [`ScriptedGenerator`]
//! returns the samples a test wrote for each prompt, a [`ScriptedVerifier`] returns the
//! step rewards a test wrote for each step, and both record every request they get.
//! With them a strategy's exact behaviour (which beams survive, what a search costs,
//! which answer wins) is a unit test whose expected values are worked out by hand.
//! Real generators and verifiers are still never mocked in integration tests.
//!
//! Why a public module rather than `tests/support/`: other crates' tests (the
//! orchestrator's, for one) need a generator and a verifier that run without a model,
//! and a `tests/` helper cannot be shared across crates. Nothing in the library uses
//! this module.
//!
//! Conventions, chosen so that costs are easy to work out by hand:
//! - a sample costs one token per byte of its text; a text longer than the request's
//!   `max_tokens` is cut there and finishes with [`Finish::Length`];
//! - a sample that ends with one of the request's stop strings finishes with
//!   [`Finish::Stop`], any other with [`Finish::Eos`];
//! - scoring costs exactly [`VerifierCost::bound`] tokens (the bound is tight);
//! - FLOPs are zero.

use crate::error::{Result, SearchError};
use crate::traits::{
    Finish, GenOutput, GenRequest, Generate, GeneratorLimits, Sample, Score, ScoreOutput,
    ScoreRequest, VerifierCost,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Which calls a scripted reply answers: greedy calls (temperature 0, lookahead's
/// rollouts) are scripted apart from sampled ones, since both continue the same prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    Sampled,
    Greedy,
}

impl Mode {
    fn of(req: &GenRequest) -> Self {
        if req.temperature == 0.0 {
            Self::Greedy
        } else {
            Self::Sampled
        }
    }
}

type Fallback = Box<dyn Fn(&GenRequest) -> String + Send + Sync>;

/// A [`Generate`] that answers from a script. Texts are kept per prompt in a queue:
/// each call takes its `n` samples from the front of its prompt's queue, so calls
/// with the same prompt get the texts in the order they were written. A call the
/// script does not cover fails with an error that names its prompt (so a test that
/// sees the strategy go somewhere unexpected fails saying where).
pub struct ScriptedGenerator {
    replies: Mutex<HashMap<(String, Mode), VecDeque<String>>>,
    fallback: Option<Fallback>,
    requests: Mutex<Vec<GenRequest>>,
    limits: GeneratorLimits,
}

impl Default for ScriptedGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedGenerator {
    /// An empty script; one-byte tokens, a context too long to ever clamp a call, and
    /// no FLOPs (0 parameters) unless [`ScriptedGenerator::with_limits`] says otherwise.
    pub fn new() -> Self {
        Self {
            replies: Mutex::new(HashMap::new()),
            fallback: None,
            requests: Mutex::new(Vec::new()),
            limits: GeneratorLimits {
                max_token_bytes: 1,
                context_length: 1 << 20,
                max_samples: 256,
                parameters: 0,
            },
        }
    }

    /// Sampled calls (temperature > 0) with exactly this prompt return these texts,
    /// in order, across calls.
    pub fn reply<T: Into<String>>(self, prompt: &str, texts: impl IntoIterator<Item = T>) -> Self {
        self.push(prompt, Mode::Sampled, texts)
    }

    /// Greedy calls (temperature 0, e.g. a lookahead rollout) with exactly this
    /// prompt return these texts, in order, across calls.
    pub fn greedy<T: Into<String>>(self, prompt: &str, texts: impl IntoIterator<Item = T>) -> Self {
        self.push(prompt, Mode::Greedy, texts)
    }

    /// Every sample the queues do not cover is `text(request)`.
    pub fn otherwise(
        mut self,
        text: impl Fn(&GenRequest) -> String + Send + Sync + 'static,
    ) -> Self {
        self.fallback = Some(Box::new(text));
        self
    }

    pub fn with_limits(mut self, limits: GeneratorLimits) -> Self {
        self.limits = limits;
        self
    }

    fn push<T: Into<String>>(
        self,
        prompt: &str,
        mode: Mode,
        texts: impl IntoIterator<Item = T>,
    ) -> Self {
        self.replies
            .lock()
            .expect("not poisoned")
            .entry((prompt.to_string(), mode))
            .or_default()
            .extend(texts.into_iter().map(Into::into));
        self
    }

    /// Every request received so far, in the order they arrived.
    pub fn requests(&self) -> Vec<GenRequest> {
        self.requests.lock().expect("not poisoned").clone()
    }

    /// `(prompt, n)` of every request so far: the shape of a search at a glance.
    pub fn calls(&self) -> Vec<(String, u32)> {
        self.requests()
            .into_iter()
            .map(|r| (r.prompt, r.n))
            .collect()
    }

    fn texts(&self, req: &GenRequest) -> Result<Vec<String>> {
        let mut replies = self.replies.lock().expect("not poisoned");
        let mut queue = replies.get_mut(&(req.prompt.clone(), Mode::of(req)));
        (0..req.n)
            .map(
                |i| match (queue.as_mut().and_then(|q| q.pop_front()), &self.fallback) {
                    (Some(text), _) => Ok(text),
                    (None, Some(text)) => Ok(text(req)),
                    (None, None) => Err(SearchError::Internal(format!(
                        "the script has no {:?} sample left for prompt {:?} (sample {} of {})",
                        Mode::of(req),
                        req.prompt,
                        i + 1,
                        req.n
                    ))),
                },
            )
            .collect()
    }
}

impl Generate for ScriptedGenerator {
    async fn generate(&self, req: GenRequest) -> Result<GenOutput> {
        self.requests
            .lock()
            .expect("not poisoned")
            .push(req.clone());
        let texts = self.texts(&req)?;
        let samples = texts
            .into_iter()
            .map(|mut text| {
                let matched = req
                    .stop
                    .iter()
                    .find(|s| text.ends_with(s.as_str()))
                    .cloned();
                let mut finish = if matched.is_some() {
                    Finish::Stop
                } else {
                    Finish::Eos
                };
                if text.len() > req.max_tokens as usize {
                    let mut cut = req.max_tokens as usize;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.truncate(cut);
                    finish = Finish::Length;
                }
                Sample {
                    tokens: text.len() as u32,
                    text,
                    stop: matched.filter(|_| finish == Finish::Stop),
                    finish,
                    logprob: 0.0,
                }
            })
            .collect();
        // One token per byte (within `GeneratorLimits::flops_bound`'s prompt bound).
        Ok(GenOutput::new(
            samples,
            req.prompt.len() as u32,
            0,
            self.limits.parameters,
        ))
    }

    fn limits(&self) -> GeneratorLimits {
        self.limits
    }
}

type StepRewards = Box<dyn Fn(&[String]) -> Vec<f32> + Send + Sync>;

/// A [`Score`] that answers from a script: the rewards of a candidate's steps are a
/// function the test wrote of its steps.
pub struct ScriptedVerifier {
    rewards: StepRewards,
    requests: Mutex<Vec<ScoreRequest>>,
    cost: VerifierCost,
}

impl ScriptedVerifier {
    /// Rewards are `rewards(steps)`, one per step.
    pub fn new(rewards: impl Fn(&[String]) -> Vec<f32> + Send + Sync + 'static) -> Self {
        Self {
            rewards: Box::new(rewards),
            requests: Mutex::new(Vec::new()),
            cost: VerifierCost {
                prompt_overhead: 0,
                step_overhead: 0,
                parameters: 0,
            },
        }
    }

    /// Each step's reward is looked up by the step's text; a step the table does not
    /// name gets `otherwise`.
    pub fn per_step(table: &[(&str, f32)], otherwise: f32) -> Self {
        let table: HashMap<String, f32> = table.iter().map(|(s, r)| (s.to_string(), *r)).collect();
        Self::new(move |steps| {
            steps
                .iter()
                .map(|s| table.get(s.as_str()).copied().unwrap_or(otherwise))
                .collect()
        })
    }

    pub fn with_cost(mut self, cost: VerifierCost) -> Self {
        self.cost = cost;
        self
    }

    /// Every request received so far, in the order they arrived.
    pub fn requests(&self) -> Vec<ScoreRequest> {
        self.requests.lock().expect("not poisoned").clone()
    }

    /// The steps of every candidate scored so far, one list per request.
    pub fn scored(&self) -> Vec<Vec<Vec<String>>> {
        self.requests()
            .into_iter()
            .map(|r| r.candidates.into_iter().map(|c| c.steps).collect())
            .collect()
    }
}

impl Score for ScriptedVerifier {
    async fn score(&self, req: ScoreRequest) -> Result<ScoreOutput> {
        self.requests
            .lock()
            .expect("not poisoned")
            .push(req.clone());
        let scores = req
            .candidates
            .iter()
            .map(|c| (self.rewards)(&c.steps))
            .collect();
        let tokens = req
            .candidates
            .iter()
            .map(|c| self.cost.bound(&req.question, &c.steps))
            .sum();
        Ok(ScoreOutput {
            scores,
            tokens,
            flops: self.cost.flops(tokens),
        })
    }

    fn cost(&self) -> VerifierCost {
        self.cost
    }
}

/// Asserts the budget rule on one finished search: it spent no more generations than
/// `generations` and (when `max_tokens` > 0) no more tokens than `max_tokens`, or it was
/// refused up front as INVALID_ARGUMENT with a reason naming the budget. Shared by the
/// scripted tests here and the model-backed ones in `ponder-worker`.
pub fn assert_within_budget(
    label: &str,
    generations: u32,
    max_tokens: u64,
    result: &crate::Result<crate::Outcome>,
) {
    match result {
        Ok(o) => {
            let u = &o.usage;
            assert!(
                u.generations <= generations,
                "{label} {generations}/{max_tokens}: {u:?}"
            );
            if max_tokens > 0 {
                assert!(
                    u.tokens() <= max_tokens,
                    "{label} {generations}/{max_tokens}: {u:?}"
                );
            }
        }
        // A budget too small for the strategy is refused with a reason.
        Err(crate::SearchError::Invalid(m)) => {
            assert!(
                m.contains("budget") || m.contains("generations"),
                "{label}: {m}"
            )
        }
        Err(e) => panic!("{label} {generations}/{max_tokens}: {e}"),
    }
}

/// Asserts the FLOPs rule on one finished search: it spent no more than `max_flops`
/// (generator plus verifier, and the two parts add up to the total) and no more
/// generations than `generations`, or it was refused up front as INVALID_ARGUMENT with
/// a reason naming the budget.
pub fn assert_within_flops(
    label: &str,
    generations: u32,
    max_flops: f64,
    result: &crate::Result<crate::Outcome>,
) {
    match result {
        Ok(o) => {
            let u = &o.usage;
            assert!(
                u.generations <= generations && u.flops <= max_flops * (1.0 + 1e-9),
                "{label} {generations}/{max_flops:e}: {u:?}"
            );
            assert!(
                (u.generator_flops + u.verifier_flops - u.flops).abs() <= 1e-6 * u.flops.max(1.0),
                "{label}: the parts do not add up: {u:?}"
            );
        }
        Err(crate::SearchError::Invalid(m)) => {
            assert!(m.contains("budget"), "{label}: {m}")
        }
        Err(e) => panic!("{label} {generations}/{max_flops:e}: {e}"),
    }
}

/// One spec of every strategy (with the parameter variants worth covering), for tests
/// that must hold for all of them, scripted or on real models.
pub const STRATEGY_SPECS: [&str; 12] = [
    "self_consistency",
    "best_of_n",
    "weighted_best_of_n",
    "beam_search:2",
    "beam_search:4",
    "lookahead:2",
    "dvts:2",
    "rebase",
    "revisions",
    "revisions:1",
    "adaptive",
    "compute_optimal",
];
