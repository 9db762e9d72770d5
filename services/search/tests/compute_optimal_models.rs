//! Compute-optimal over a ladder of generator models, on scripted models: the probes
//! run on the cheapest, the policy's choice moves the query to another model (probes
//! then discarded and counted), a FLOPs limit reads the FLOPs rows, a policy naming a
//! model with no live member falls back with a note, and a pinned model is never left.
//!
//! As in scripted_strategies.rs, every expected call and count is worked out by hand.

use ponder_search::scripted::{ScriptedGenerator, ScriptedVerifier};
use ponder_search::strategy::compute_optimal::Policy;
use ponder_search::traits::GeneratorLimits;
use ponder_search::{
    solve_on, Budget, Generators, Model, Outcome, SolutionFormat, SolveParams, StrategyKind,
};
use std::sync::Arc;

const ROOT: &str = "Q: q\n";

fn model(parameters: u64) -> ScriptedGenerator {
    ScriptedGenerator::new().with_limits(GeneratorLimits {
        max_token_bytes: 1,
        context_length: 1 << 20,
        max_samples: 256,
        parameters,
    })
}

/// Bins by the probes' mean reward: 0.9 is bin 1 (easy), 0.1 bin 5 (hard). Easy:
/// majority on the probe model with the whole budget; hard: best-of-N on `big` with 6
/// generations in all. Under a FLOPs limit of at least 1e6: `huge` (not served) on
/// hard questions.
fn policy() -> Arc<Policy> {
    let p: Policy = serde_json::from_str(
        r#"{"probes": 4, "bin_edges": [0.2, 0.4, 0.6, 0.8],
            "table": {"8": ["majority", "majority", "majority", "majority",
                            {"model": "big", "strategy": "best_of_n", "generations": 6}]},
            "flops_table": [
              {"max_flops": 1e6, "row": ["majority", "majority", "majority", "majority",
                                         {"model": "huge", "strategy": "best_of_n"}]}]}"#,
    )
    .unwrap();
    p.validate().unwrap();
    Arc::new(p)
}

async fn route(
    set: &Generators<'_, ScriptedGenerator>,
    v: &ScriptedVerifier,
    flops: f64,
) -> Outcome {
    let budget = Budget::new(8, 0, None)
        .unwrap()
        .with_max_flops(flops)
        .unwrap();
    let mut p = SolveParams::new("q", budget, 1);
    p.strategy = Some(StrategyKind::ComputeOptimal);
    p.policy = Some(policy());
    solve_on(set, Some(v), &SolutionFormat::default(), p, None)
        .await
        .unwrap()
}

fn ladder<'a>(
    small: &'a ScriptedGenerator,
    big: &'a ScriptedGenerator,
) -> Generators<'a, ScriptedGenerator> {
    // Listed big first and big the default: the set still probes on the cheapest.
    Generators::new(
        vec![
            Model {
                id: "big".into(),
                generator: big,
            },
            Model {
                id: "small".into(),
                generator: small,
            },
        ],
        "big",
    )
    .unwrap()
}

#[tokio::test]
async fn easy_questions_stay_on_the_cheapest_model_and_reuse_the_probes() {
    let small = model(10).reply(ROOT, ["Answer: 7"; 8]);
    let big = model(1000);
    let v = ScriptedVerifier::per_step(&[("Answer: 7", 0.9)], 0.0);
    let o = route(&ladder(&small, &big), &v, 0.0).await;
    let d = o.decision.clone().unwrap();
    assert_eq!((d.bin, d.chosen), (0, StrategyKind::SelfConsistency));
    assert_eq!(
        (d.probe_model.as_str(), d.model.as_str()),
        ("small", "small")
    );
    assert_eq!(o.model_id, "small");
    assert_eq!((d.probes_discarded, d.notes.len()), (0, 0));
    // 4 probes, then majority with the 4 left; the probes are candidates too.
    assert_eq!((o.candidates, o.usage.generations), (8, 8));
    assert!(big.requests().is_empty());
    assert_eq!(d.probe_usage.generations, 4);
}

#[tokio::test]
async fn hard_questions_move_to_the_chosen_model_and_discard_the_probes() {
    let small = model(10).reply(ROOT, ["Answer: 5"; 4]);
    let big = model(1000).reply(ROOT, ["Answer: 6"; 2]);
    let v = ScriptedVerifier::per_step(&[("Answer: 5", 0.1), ("Answer: 6", 0.95)], 0.0);
    let o = route(&ladder(&small, &big), &v, 0.0).await;
    let d = o.decision.clone().unwrap();
    assert_eq!((d.bin, d.chosen), (4, StrategyKind::BestOfN));
    assert_eq!((d.probe_model.as_str(), d.model.as_str()), ("small", "big"));
    assert_eq!(o.model_id, "big");
    // The choice spends 6 generations in all: 4 probes on small, 2 samples on big;
    // only big's 2 are candidates.
    assert_eq!(
        (small.calls().len(), big.calls()),
        (1, vec![(ROOT.to_string(), 2)])
    );
    assert_eq!(
        (o.usage.generations, o.candidates, d.probes_discarded),
        (6, 2, 4)
    );
    assert_eq!(o.answer.as_deref(), Some("6"));
    // Each model's FLOPs are booked at its own size (9-byte samples, 1-byte tokens,
    // 5-token prompt once per call): small 2 x 10 x (4 x 9 + 5), big 2 x 1000 x (2 x 9 + 5).
    assert_eq!(d.probe_usage.generator_flops, 2.0 * 10.0 * 41.0);
    assert_eq!(
        o.usage.generator_flops,
        2.0 * 10.0 * 41.0 + 2.0 * 1000.0 * 23.0
    );
}

#[tokio::test]
async fn a_policy_naming_a_model_with_no_live_member_runs_on_the_probe_model_with_a_note() {
    // A FLOPs limit of 1e9 reads the FLOPs row, which sends hard questions to `huge`.
    let small = model(10).reply(ROOT, ["Answer: 5"; 8]);
    let big = model(1000);
    let v = ScriptedVerifier::per_step(&[("Answer: 5", 0.1)], 0.0);
    let o = route(&ladder(&small, &big), &v, 1e9).await;
    let d = o.decision.clone().unwrap();
    assert_eq!((d.bin, d.chosen), (4, StrategyKind::BestOfN));
    assert_eq!((d.model.as_str(), o.model_id.as_str()), ("small", "small"));
    assert_eq!(d.notes.len(), 1, "{:?}", d.notes);
    assert!(d.notes[0].contains("huge") && d.notes[0].contains("ran on small"));
    assert_eq!((o.usage.generations, o.candidates), (8, 8));
    assert!(big.requests().is_empty());
}

#[tokio::test]
async fn a_pinned_model_is_never_left() {
    let big = model(1000).reply(ROOT, ["Answer: 5"; 8]);
    let v = ScriptedVerifier::per_step(&[("Answer: 5", 0.1)], 0.0);
    let o = route(&Generators::one("big", &big).pinned(), &v, 0.0).await;
    let d = o.decision.clone().unwrap();
    // Hard: best-of-N with 6 generations in all, on big (the pinned model) throughout.
    assert_eq!((d.bin, d.chosen), (4, StrategyKind::BestOfN));
    assert_eq!((d.probe_model.as_str(), d.model.as_str()), ("big", "big"));
    assert_eq!((d.probes_discarded, d.notes.len()), (0, 0));
    assert_eq!((o.usage.generations, o.candidates), (6, 6));
}

#[test]
fn a_model_set_is_sorted_by_size_and_rejects_a_missing_default_or_a_repeated_id() {
    let (a, b) = (model(5), model(50));
    let set = ladder(&a, &b);
    assert_eq!(set.ids(), ["small", "big"]);
    assert_eq!(set.get(set.default_index()).id, "big");
    let missing = Generators::new(
        vec![Model {
            id: "big".into(),
            generator: &b,
        }],
        "small",
    );
    assert!(missing.is_err());
    let twice = Generators::new(
        vec![
            Model {
                id: "big".into(),
                generator: &b,
            },
            Model {
                id: "big".into(),
                generator: &a,
            },
        ],
        "big",
    );
    assert!(twice.is_err());
}

#[tokio::test]
async fn a_flops_row_without_probes_runs_its_choice_directly() {
    let p: Policy = serde_json::from_str(
        r#"{"probes": 4, "bin_edges": [0.2, 0.4, 0.6, 0.8], "table": {"8": ["majority", "majority", "majority", "majority", "majority"]},
            "flops_table": [{"max_flops": 1e3, "probe": false, "row": [
                {"model": "big", "strategy": "greedy", "generations": 1},
                "majority", "majority", "majority", "majority"]}]}"#,
    )
    .unwrap();
    let small = model(10);
    let big = model(1000).greedy(ROOT, ["Answer: 3"]);
    let v = ScriptedVerifier::per_step(&[], 0.5);
    let budget = Budget::new(8, 0, None)
        .unwrap()
        .with_max_flops(1e9)
        .unwrap();
    let mut params = SolveParams::new("q", budget, 1);
    params.strategy = Some(StrategyKind::ComputeOptimal);
    params.policy = Some(Arc::new(p));
    let set = ladder(&small, &big);
    let o = solve_on(&set, Some(&v), &SolutionFormat::default(), params, None)
        .await
        .unwrap();
    let d = o.decision.clone().unwrap();
    assert!(!d.probed);
    assert_eq!((d.chosen, d.model.as_str()), (StrategyKind::Greedy, "big"));
    assert_eq!(
        (o.answer.as_deref(), o.model_id.as_str()),
        (Some("3"), "big")
    );
    assert_eq!((o.usage.generations, d.probe_usage.generations), (1, 0));
    assert!(small.requests().is_empty() && v.requests().is_empty());
}
