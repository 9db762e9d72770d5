//! Every strategy on the in-process engine with the bundled models: the budget is never
//! exceeded for any strategy and parameter combination, results are deterministic for
//! a fixed seed, and step-level search answers easy questions.

use ponder_engine::{LoadOptions, ModelWorker, WorkerConfig};
use ponder_search::{solve, Budget, SearchError, SolutionFormat, SolveParams, StrategyKind};
use ponder_worker::local::{LocalGenerator, LocalVerifier};
use ponder_worker::manifest::{ModelRole, ModelsDir};
use std::path::PathBuf;
use std::sync::OnceLock;

fn models() -> PathBuf {
    std::env::var_os("PONDER_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

fn pair() -> &'static (LocalGenerator, LocalVerifier) {
    static PAIR: OnceLock<(LocalGenerator, LocalVerifier)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let dir = ModelsDir::open(&models()).unwrap();
        let open = |role: ModelRole| {
            let path = dir.resolve(role, None).unwrap();
            let m = ponder_engine::load(&path, &LoadOptions::default()).unwrap();
            ModelWorker::spawn(m, WorkerConfig::default())
        };
        (
            LocalGenerator::new(open(ModelRole::Generator)),
            LocalVerifier::new(open(ModelRole::Verifier)).unwrap(),
        )
    })
}

use ponder_search::scripted::STRATEGY_SPECS as SPECS;

async fn run(
    spec: &str,
    question: &str,
    generations: u32,
    max_tokens: u64,
    seed: u64,
) -> Result<ponder_search::Outcome, SearchError> {
    let (g, v) = pair();
    let mut p = SolveParams::new(
        question,
        Budget::new(generations, max_tokens, None).unwrap(),
        seed,
    );
    p.strategy = Some(StrategyKind::parse(spec).unwrap());
    solve(g, Some(v), &SolutionFormat::default(), p, None).await
}

/// The exact budget arithmetic is tested on scripted doubles (ponder-search's
/// `scripted_strategies`); this checks it holds with the real engine's token counts, at a
/// generation cap, a token cap, and both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_strategy_ever_exceeds_its_budget() {
    for spec in SPECS {
        for (generations, max_tokens) in [(1, 0), (3, 0), (6, 1200), (4, 500)] {
            let result = run(spec, "(47+38)*3-19", generations, max_tokens, 1).await;
            ponder_search::scripted::assert_within_budget(spec, generations, max_tokens, &result);
        }
    }
}

/// The same in FLOPs, on the engine's real token counts and the bundled models' real
/// parameter counts (1.31M each: 2.6 MFLOPs a token): a budget below one sample, and
/// one that admits a single scored sample at its worst case (1,024 tokens and a PRM
/// pass over them, about 1.07e10 FLOPs) at a time, which binds long before 16
/// generations do. Step-level search reserves a round of 16 steps at once, more than
/// that, and is refused as too small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_strategy_ever_exceeds_its_flops_budget() {
    let (g, v) = pair();
    let mut answered = 0;
    for spec in SPECS {
        for max_flops in [1e7, 1.2e10] {
            let mut p = SolveParams::new(
                "(47+38)*3-19",
                Budget::new(16, 0, None)
                    .unwrap()
                    .with_max_flops(max_flops)
                    .unwrap(),
                1,
            );
            p.strategy = Some(StrategyKind::parse(spec).unwrap());
            let result = solve(g, Some(v), &SolutionFormat::default(), p, None).await;
            ponder_search::scripted::assert_within_flops(spec, 16, max_flops, &result);
            if let Ok(o) = &result {
                answered += 1;
                assert!(o.usage.generator_flops > 0.0, "{spec}: {:?}", o.usage);
            }
        }
    }
    assert!(answered >= 6, "only {answered} budgets were usable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_seed_gives_the_same_result() {
    for spec in SPECS {
        let a = run(spec, "12*(7+6)-45+3", 4, 0, 9).await.unwrap();
        let b = run(spec, "12*(7+6)-45+3", 4, 0, 9).await.unwrap();
        assert_eq!(
            (&a.answer, &a.solution, a.score, a.usage.generations),
            (&b.answer, &b.solution, b.score, b.usage.generations),
            "{spec}"
        );
        assert_eq!(a.usage.generator_tokens, b.usage.generator_tokens, "{spec}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_level_search_answers_easy_questions() {
    for spec in ["beam_search:4", "dvts:2", "rebase", "lookahead:2"] {
        let o = run(spec, "47+38", 8, 0, 3).await.unwrap();
        assert_eq!(o.answer.as_deref(), Some("85"), "{spec}: {}", o.solution);
        assert!(
            o.solution.ends_with("Answer: 85"),
            "{spec}: {:?}",
            o.solution
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_stopping_spends_less_on_easy_questions() {
    let o = run("adaptive", "47+38", 32, 0, 5).await.unwrap();
    assert_eq!(o.answer.as_deref(), Some("85"));
    assert!(
        o.usage.generations < 32,
        "adaptive used all {} generations",
        o.usage.generations
    );
}

/// Offline evaluation replays sampling strategies from one draw; that is sound only if
/// the replay gives what running the strategy gives. Hard questions, so the answers
/// and the adaptive stopping points vary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_draw_equals_running_the_strategy() {
    let (g, v) = pair();
    let format = SolutionFormat::default();
    for (question, seed) in [("(958*47-3076)*29", 11u64), ("7391*86-(429+9937)", 12)] {
        let mut p = SolveParams::new(question, Budget::new(12, 0, None).unwrap(), seed);
        let (draw, usage) = ponder_search::draw(g, v, &format, &p, 12).await.unwrap();
        assert_eq!((draw.len(), usage.generations), (12, 12));
        for (spec, budget) in [
            ("self_consistency", 3),
            ("best_of_n", 7),
            ("weighted_best_of_n", 10),
            ("adaptive:8", 12),
        ] {
            let strategy = StrategyKind::parse(spec).unwrap();
            let replayed = ponder_search::replay::replay(strategy, budget, &draw).unwrap();
            let live = run(spec, question, budget, 0, seed).await.unwrap();
            assert_eq!(
                (replayed.answer, replayed.generations),
                (live.answer, live.usage.generations),
                "{spec} at {budget} on {question}"
            );
        }
        // Compute-optimal's probes are the draw's first samples: the same bin.
        p.strategy = Some(StrategyKind::ComputeOptimal);
        p.budget = Budget::new(8, 0, None).unwrap();
        let live = solve(g, Some(v), &format, p, None).await.unwrap();
        let d = live.decision.unwrap();
        let probes = ponder_search::strategy::compute_optimal::Policy::default().probes as usize;
        let mean = draw[..probes].iter().map(|s| s.score.unwrap()).sum::<f32>() / probes as f32;
        assert!((d.mean_probe_score - mean).abs() < 1e-4, "{d:?} vs {mean}");
    }
}
