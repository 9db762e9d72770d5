//! Load-adaptive grants as the search sees them (`ponder_search::grant`): a fixed
//! budget is searched exactly as before; a grant cut while a query runs stops new
//! waves and keeps what was spent; a grant raised lets sampling continue up to the
//! maximum; compute-optimal asks again once it knows the question's bin; a floor the
//! FLOPs limit cannot pay for is refused. The controller that sets grants from load
//! is tested in the orchestrator (`control::law`).

use ponder_search::scripted::{ScriptedGenerator, ScriptedVerifier};
use ponder_search::traits::{GeneratorLimits, VerifierCost};
use ponder_search::{
    solve, Allowance, Budget, BudgetMode, Grant, GrantAsk, GrantReason, Outcome, SearchError,
    SolutionFormat, SolveParams, StrategyKind,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Grants `first` for the first `switch_after` asks and `then` afterwards, and
/// remembers the bins it was asked with.
#[derive(Debug)]
struct Stepped {
    first: u32,
    then: u32,
    switch_after: u32,
    asks: AtomicU32,
    bins: Mutex<Vec<Option<usize>>>,
}

impl Stepped {
    fn new(first: u32, then: u32, switch_after: u32) -> Arc<Self> {
        Arc::new(Self {
            first,
            then,
            switch_after,
            asks: AtomicU32::new(0),
            bins: Mutex::new(vec![]),
        })
    }
}

impl Allowance for Stepped {
    fn grant(&self, ask: &GrantAsk<'_>) -> Grant {
        self.bins.lock().unwrap().push(ask.bin);
        let n = self.asks.fetch_add(1, Ordering::Relaxed) + 1;
        Grant {
            generations: if n <= self.switch_after {
                self.first
            } else {
                self.then
            },
            reason: GrantReason::Load,
        }
    }
}

/// Grants by bin: `unknown` before the bin is known, `known` after.
#[derive(Debug)]
struct ByBin {
    unknown: u32,
    known: u32,
    bins: Mutex<Vec<Option<usize>>>,
}

impl Allowance for ByBin {
    fn grant(&self, ask: &GrantAsk<'_>) -> Grant {
        self.bins.lock().unwrap().push(ask.bin);
        Grant {
            generations: if ask.bin.is_some() {
                self.known
            } else {
                self.unknown
            },
            reason: GrantReason::Load,
        }
    }
}

fn generator() -> ScriptedGenerator {
    ScriptedGenerator::new().otherwise(|_| "Answer: 7".to_string())
}

fn verifier() -> ScriptedVerifier {
    ScriptedVerifier::new(|steps| vec![0.9; steps.len()])
}

async fn run(
    strategy: StrategyKind,
    budget: Budget,
    allowance: Option<Arc<dyn Allowance>>,
) -> Result<Outcome, SearchError> {
    let g = generator();
    let v = verifier();
    let mut p = SolveParams::new("q", budget, 5);
    p.strategy = Some(strategy);
    let format = SolutionFormat::default();
    let query = p.validate(&format)?;
    let query = match allowance {
        Some(a) => query.with_allowance(a),
        None => query,
    };
    ponder_search::solve_query(&g, Some(&v), &format, &query, None).await
}

fn budget(max: u32) -> Budget {
    Budget::new(max, 0, None).unwrap()
}

#[tokio::test]
async fn a_fixed_budget_and_a_grant_of_the_maximum_search_alike() {
    let fixed = run(StrategyKind::WeightedBestOfN, budget(16), None)
        .await
        .unwrap();
    assert_eq!(fixed.budget_mode, BudgetMode::Fixed);
    assert_eq!(
        (fixed.granted, fixed.grant_reason),
        (16, GrantReason::Fixed)
    );
    assert_eq!(fixed.usage.generations, 16);
    let full = Stepped::new(16, 16, 0);
    let adaptive = run(StrategyKind::WeightedBestOfN, budget(16), Some(full))
        .await
        .unwrap();
    assert_eq!(adaptive.budget_mode, BudgetMode::Adaptive);
    assert_eq!(
        (
            &adaptive.answer,
            adaptive.usage,
            adaptive.candidates,
            &adaptive.tallies
        ),
        (&fixed.answer, fixed.usage, fixed.candidates, &fixed.tallies)
    );
    // And through the one-call entry point, which never has an allowance.
    let g = generator();
    let v = verifier();
    let mut p = SolveParams::new("q", budget(16), 5);
    p.strategy = Some(StrategyKind::WeightedBestOfN);
    let again = solve(&g, Some(&v), &SolutionFormat::default(), p, None)
        .await
        .unwrap();
    assert_eq!(
        (again.usage, again.budget_mode),
        (fixed.usage, BudgetMode::Fixed)
    );
}

#[tokio::test]
async fn a_grant_cut_while_the_query_runs_stops_new_waves() {
    // Waves of 8, up to 4 in flight. Asks: 1 at the start, then 2 per wave launched
    // (what is left, then the reservation). The first two waves are launched under 64;
    // the third wave's first ask gets 16, with 16 already reserved: nothing is left.
    let cut = Stepped::new(64, 16, 5);
    let o = run(StrategyKind::WeightedBestOfN, budget(64), Some(cut))
        .await
        .unwrap();
    assert_eq!(
        o.usage.generations, 16,
        "the two waves launched before the cut"
    );
    assert_eq!((o.granted, o.grant_reason), (16, GrantReason::Load));
    assert_eq!(o.candidates, 16);
}

#[tokio::test]
async fn a_grant_raised_while_the_query_runs_continues_up_to_the_maximum() {
    // Granted 8 at the start (one wave); from the fourth ask on, 64: sampling goes on
    // to the maximum, never past it.
    let raised = Stepped::new(8, 64, 3);
    let o = run(StrategyKind::WeightedBestOfN, budget(64), Some(raised))
        .await
        .unwrap();
    assert_eq!(o.usage.generations, 64);
    assert_eq!(o.granted, 64);
    // Above the maximum is clamped to it: the client's maximum is hard.
    let greedy = Stepped::new(1000, 1000, 0);
    let o = run(StrategyKind::WeightedBestOfN, budget(24), Some(greedy))
        .await
        .unwrap();
    assert_eq!((o.usage.generations, o.granted), (24, 24));
    // Below the floor is raised to it.
    let stingy = Stepped::new(0, 0, 0);
    let floored = Budget::new(24, 0, None)
        .unwrap()
        .with_min_generations(8)
        .unwrap();
    let o = run(StrategyKind::WeightedBestOfN, floored, Some(stingy))
        .await
        .unwrap();
    assert_eq!((o.usage.generations, o.granted), (8, 8));
}

#[tokio::test]
async fn compute_optimal_asks_again_with_the_predicted_bin() {
    // 64 while the bin is unknown (the 4 probes fit), 8 once it is: the built-in
    // policy's row for 8 is the row of 4 (weighted best-of-N, reusing the probes), so
    // the query spends 8 in all.
    let by_bin = Arc::new(ByBin {
        unknown: 64,
        known: 8,
        bins: Mutex::new(vec![]),
    });
    let o = run(
        StrategyKind::ComputeOptimal,
        budget(64),
        Some(by_bin.clone()),
    )
    .await
    .unwrap();
    assert_eq!(o.usage.generations, 8);
    assert_eq!(o.granted, 8);
    let bins = by_bin.bins.lock().unwrap().clone();
    assert_eq!(bins[0], None, "the first ask comes before the probes");
    let d = o.decision.expect("compute-optimal decided");
    assert!(
        bins.contains(&Some(d.bin)),
        "asked with the probes' bin {}: {bins:?}",
        d.bin
    );
}

#[tokio::test]
async fn a_floor_the_flops_limit_cannot_pay_for_is_refused() {
    let limits = GeneratorLimits {
        max_token_bytes: 1,
        context_length: 1 << 20,
        max_samples: 256,
        parameters: 1000,
    };
    let g = generator().with_limits(limits);
    let v = verifier().with_cost(VerifierCost {
        prompt_overhead: 0,
        step_overhead: 0,
        parameters: 1000,
    });
    let format = SolutionFormat::default();
    let one_sample = 2.0 * 1000.0 * (3.0 + format.max_solution_tokens as f64);
    for (floor, ok) in [(1, true), (64, false)] {
        let b = Budget::new(64, 0, None)
            .unwrap()
            .with_max_flops(one_sample * 4.0)
            .unwrap()
            .with_min_generations(floor)
            .unwrap();
        let mut p = SolveParams::new("q", b, 1);
        p.strategy = Some(StrategyKind::SelfConsistency);
        let r = solve(&g, Some(&v), &format, p, None).await;
        match (ok, r) {
            (true, r) => assert!(r.is_ok(), "floor {floor}: {r:?}"),
            (false, Err(SearchError::Invalid(m))) => {
                assert!(
                    m.contains("budget.min_generations") && m.contains("max_flops"),
                    "{m}"
                )
            }
            (false, other) => panic!("floor {floor}: expected INVALID_ARGUMENT, got {other:?}"),
        }
    }
}
