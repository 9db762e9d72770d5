//! The workload's own calls, each timed alone: the bundled policy answers questions at
//! the load mix's budget on the real engine, and every generate and score call it makes
//! waits its turn, so each is measured with the model to itself.
//!
//! Why besides the synthetic sweep: a node serves the calls the strategies make, not
//! the sweep's. Fitted on the sweep alone, the verifier's model came out about a third
//! faster than the same nodes measured in place (docs/scaling.md, "N = 1, call by
//! call"): the strategies score partial solutions of every length, the sweep only whole
//! ones. Timing the workload's calls one at a time keeps the fit on calls alone, so
//! how calls share the loop stays the simulation's part (`recorded::sim`).

use ponder_arith::eval_sampler::eval_set;
use ponder_search::format::SolutionFormat;
use ponder_search::strategy::compute_optimal::Policy;
use ponder_search::traits::{GeneratorLimits, VerifierCost};
use ponder_search::{
    solve, Budget, GenOutput, GenRequest, Generate, Score, ScoreOutput, ScoreRequest, SolveParams,
};
use ponder_worker::recorded::latency::{GenerateMeasure, ScoreMeasure};
use ponder_worker::recorded::store::candidate_bounds;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The load mix's budget (docs/load-testing.md: `default:16/fixed`).
pub const WORKLOAD_BUDGET: u32 = 16;
/// The eval sampler's seed for these questions (not the one `ponder eval` reports on).
const WORKLOAD_SEED: u64 = 23;

/// Calls measured alone while the strategies ran.
#[derive(Debug, Default)]
pub struct Measured {
    pub generate: Vec<GenerateMeasure>,
    pub score: Vec<ScoreMeasure>,
}

/// A generator or verifier whose calls take turns (one `turn` shared by both, so
/// neither engine runs beside the other) and are timed.
struct Alone<'a, T> {
    inner: &'a T,
    turn: Arc<tokio::sync::Mutex<()>>,
    measured: Arc<Mutex<Measured>>,
}

impl<T: Generate> Generate for Alone<'_, T> {
    async fn generate(&self, req: GenRequest) -> ponder_search::Result<GenOutput> {
        let _turn = self.turn.lock().await;
        let started = Instant::now();
        let out = self.inner.generate(req).await?;
        let measure = super::generate_measure(
            out.samples.len() as u32,
            &out,
            started.elapsed().as_secs_f64(),
        );
        self.measured
            .lock()
            .expect("measures lock")
            .generate
            .push(measure);
        Ok(out)
    }

    fn limits(&self) -> GeneratorLimits {
        self.inner.limits()
    }
}

impl<T: Score> Score for Alone<'_, T> {
    async fn score(&self, req: ScoreRequest) -> ponder_search::Result<ScoreOutput> {
        let bounds = candidate_bounds(&req, &self.inner.cost());
        let _turn = self.turn.lock().await;
        let started = Instant::now();
        let out = self.inner.score(req).await?;
        let measure = super::score_measure(&bounds, &out, started.elapsed().as_secs_f64());
        self.measured
            .lock()
            .expect("measures lock")
            .score
            .push(measure);
        Ok(out)
    }

    fn cost(&self) -> VerifierCost {
        self.inner.cost()
    }
}

/// Answers `per_level` eval-sampler questions of every level with `policy` at
/// [`WORKLOAD_BUDGET`], one query at a time and each call alone; the calls' measures.
pub async fn measure<G: Generate, S: Score>(
    generator: &G,
    verifier: &S,
    policy: Option<Arc<Policy>>,
    format: &SolutionFormat,
    per_level: usize,
) -> anyhow::Result<Measured> {
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    let measured = Arc::new(Mutex::new(Measured::default()));
    let generator = Alone {
        inner: generator,
        turn: turn.clone(),
        measured: measured.clone(),
    };
    let verifier = Alone {
        inner: verifier,
        turn,
        measured: measured.clone(),
    };
    for (i, problem) in eval_set(WORKLOAD_SEED, per_level).into_iter().enumerate() {
        let mut params = SolveParams::new(
            problem.question,
            Budget::new(WORKLOAD_BUDGET, 0, None)?,
            i as u64,
        );
        params.policy = policy.clone();
        solve(&generator, Some(&verifier), format, params, None).await?;
    }
    drop((generator, verifier));
    let measured = Arc::try_unwrap(measured)
        .map_err(|_| anyhow::anyhow!("a call outlived its query"))?
        .into_inner()
        .expect("measures lock");
    Ok(measured)
}
