//! The recorded backend against the real engine it recorded: the same strategies give
//! the same answers, candidates, scores and token counts; a smaller budget replays from
//! a larger one's recording; a call outside the recording fails and is counted; and a
//! call takes the time the latency model says.

use ponder_engine::{LoadOptions, ModelWorker, WorkerConfig};
use ponder_search::{
    solve, Budget, GenRequest, Generate, Outcome, SearchError, SolutionFormat, SolveParams,
    StrategyKind,
};
use ponder_worker::backend::{Backend, Engine};
use ponder_worker::manifest::{ModelRole, ModelsDir};
use ponder_worker::recorded::latency::{GenerateCost, LatencyModel, ScoreCost};
use ponder_worker::recorded::recorder::Recorder;
use ponder_worker::recorded::{RecordedConfig, RecordedWorker};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn models() -> PathBuf {
    std::env::var_os("PONDER_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

fn open(role: ModelRole) -> ModelWorker {
    let dir = ModelsDir::open(&models()).unwrap();
    let path = dir.resolve(role, None).unwrap();
    let m = ponder_engine::load(&path, &LoadOptions::default()).unwrap();
    ModelWorker::spawn(m, WorkerConfig::default())
}

/// Writes a hand-set latency model into the recording `dir`.
fn write_latency(
    dir: &Path,
    model_id: &str,
    generate: Option<GenerateCost>,
    score: Option<ScoreCost>,
) {
    LatencyModel::from_costs(model_id, generate, score)
        .save(dir)
        .unwrap();
}

/// A latency model fast enough for tests (a generate step of ~0.1 ms).
const FAST: GenerateCost = GenerateCost {
    call_s: 0.0005,
    prefill_token_s: 1e-6,
    step_s: 1e-4,
    step_sequence_s: 1e-6,
    attention_token_s: 0.0,
};

const FAST_SCORE: ScoreCost = ScoreCost {
    call_s: 0.0005,
    token_s: 1e-6,
    candidate_s: 0.0,
    attention_token_s: 0.0,
};

fn recorded(dir: &Path, role: &str) -> Backend {
    let config = RecordedConfig {
        max_queued: 64,
        max_active_sequences: 256,
        max_batch_tokens: 2048,
    };
    Backend::new(Engine::Recorded(
        RecordedWorker::open(dir, role, config).unwrap(),
    ))
}

async fn run(
    g: &Backend,
    v: &Backend,
    spec: &str,
    question: &str,
    budget: u32,
) -> Result<Outcome, SearchError> {
    let mut p = SolveParams::new(question, Budget::new(budget, 0, None).unwrap(), 7);
    p.strategy = Some(StrategyKind::parse(spec).unwrap());
    solve(g, Some(v), &SolutionFormat::default(), p, None).await
}

/// What must be the same between the engine and its recording (not the prefix-cache
/// hits, which the recorded node simulates, nor the time).
fn essence(o: &Outcome) -> impl PartialEq + std::fmt::Debug {
    (
        o.answer.clone(),
        o.solution.clone(),
        o.score,
        o.candidates,
        o.tallies.clone(),
        o.usage.generations,
        o.usage.generator_tokens,
        o.usage.verifier_tokens,
        o.usage.prompt_tokens,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_replays_the_engines_answers_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let (gen_dir, prm_dir) = (tmp.path().join("gen"), tmp.path().join("prm"));
    let real_g = Backend::new(Engine::Candle(open(ModelRole::Generator)));
    let real_v = Backend::new(Engine::Candle(open(ModelRole::Verifier)));
    let g_info = real_g.recorded_info("generator");
    let v_info = real_v.recorded_info("verifier");
    let real_g = real_g.recording(Recorder::create(&gen_dir, "g1", &g_info).unwrap());
    let real_v = real_v.recording(Recorder::create(&prm_dir, "v1", &v_info).unwrap());
    // Another model's recording cannot be mixed into this directory.
    let mut other = g_info.clone();
    other.model_id = "another-model".into();
    let err = Recorder::create(&gen_dir, "g2", &other).err().unwrap();
    assert!(
        err.to_string().contains("one directory per role and model"),
        "{err}"
    );

    let runs = [
        ("weighted_best_of_n", "(47+38)*3-19", 8),
        ("beam_search:2", "12+7*3", 4),
        ("revisions:2", "(8+9)*4", 4),
    ];
    let mut real = vec![];
    for (spec, q, budget) in runs {
        real.push(run(&real_g, &real_v, spec, q, budget).await.unwrap());
    }
    // The writer threads flush after every call; give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    write_latency(&gen_dir, &g_info.model_id, Some(FAST), None);
    write_latency(&prm_dir, &v_info.model_id, None, Some(FAST_SCORE));

    let (rec_g, rec_v) = (
        recorded(&gen_dir, "generator"),
        recorded(&prm_dir, "verifier"),
    );
    assert_eq!(rec_g.engine_name(), "recorded");
    assert_eq!(rec_g.info().id, g_info.model_id);
    for ((spec, q, budget), want) in runs.into_iter().zip(&real) {
        let got = run(&rec_g, &rec_v, spec, q, budget).await.unwrap();
        assert_eq!(essence(&got), essence(want), "{spec} on {q}");
    }
    // A smaller budget draws a prefix of the same seeded samples: it replays too.
    let smaller = run(&rec_g, &rec_v, "weighted_best_of_n", "(47+38)*3-19", 3).await;
    assert_eq!(smaller.unwrap().usage.generations, 3);
    assert_eq!(rec_g.misses(), 0);

    // A question never recorded: a counted refusal, never an invented answer.
    let err = run(&rec_g, &rec_v, "weighted_best_of_n", "1+1", 4)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SearchError::Invalid(m) if m.contains("not in the recording")),
        "{err}"
    );
    assert_eq!(rec_g.misses(), 1);
    // A recording of one role does not serve the other.
    let config = RecordedConfig {
        max_queued: 1,
        max_active_sequences: 1,
        max_batch_tokens: 2048,
    };
    let wrong = RecordedWorker::open(&gen_dir, "verifier", config)
        .err()
        .unwrap();
    assert!(
        wrong.to_string().contains("this node is a verifier"),
        "{wrong}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_takes_the_time_the_latency_model_gives_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gen");
    let real = Backend::new(Engine::Candle(open(ModelRole::Generator)));
    let info = real.recorded_info("generator");
    let real = real.recording(Recorder::create(&dir, "g1", &info).unwrap());
    let req = |seed| GenRequest {
        prompt: "Q: (47+38)*3-19\n".into(),
        n: 8,
        temperature: 0.8,
        top_p: 1.0,
        top_k: 0,
        max_tokens: 256,
        stop: vec![],
        seed,
        affinity: 0,
        deadline: None,
        request_id: String::new(),
        tenant: 0,
    };
    let outs = [
        real.generate(req(1)).await.unwrap(),
        real.generate(req(2)).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Slow enough that timer granularity is a small part of it: 1 ms a step.
    let cost = GenerateCost {
        call_s: 0.01,
        prefill_token_s: 1e-4,
        step_s: 1e-3,
        step_sequence_s: 1e-5,
        attention_token_s: 1e-8,
    };
    write_latency(&dir, &info.model_id, Some(cost), None);
    let g = recorded(&dir, "generator");
    let alone = |o: &ponder_search::GenOutput, cached: u32| {
        let tokens = o.samples.iter().map(|s| s.tokens);
        cost.call_s
            + cost.prefill_token_s * f64::from(o.prompt_tokens - cached)
            + cost.step_s * f64::from(tokens.clone().max().unwrap())
            + cost.step_sequence_s * tokens.clone().map(f64::from).sum::<f64>()
            + cost.attention_token_s
                * ponder_worker::recorded::latency::attended_context(o.prompt_tokens, tokens)
    };
    let started = Instant::now();
    let first = g.generate(req(1)).await.unwrap();
    let took = started.elapsed().as_secs_f64();
    let want = alone(&outs[0], first.cached_prompt_tokens);
    assert_eq!(first.samples, outs[0].samples);
    assert!(
        (took - want).abs() < 0.1 * want + 0.005,
        "took {took:.4} s, modelled {want:.4} s"
    );
    // The same prompt again: the simulated prefix cache holds all but its last token.
    let (a, b) = tokio::join!(g.generate(req(1)), g.generate(req(2)));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.cached_prompt_tokens, a.prompt_tokens - 1);
    assert_eq!(b.samples, outs[1].samples);
    // Two calls together share the loop: less than their times in turn.
    let started = Instant::now();
    let (x, y) = tokio::join!(g.generate(req(1)), g.generate(req(2)));
    let together = started.elapsed().as_secs_f64();
    let (x, y) = (x.unwrap(), y.unwrap());
    let in_turn = alone(&outs[0], x.cached_prompt_tokens) + alone(&outs[1], y.cached_prompt_tokens);
    assert!(
        together < 0.8 * in_turn,
        "together {together:.4} s, in turn {in_turn:.4} s"
    );
}

/// The latency fits shipped in bench/results/scaling/latency (written by `ponder
/// fit-latency`) are what their own measurements give, with the error they state.
#[test]
fn the_shipped_latency_fits_follow_from_their_measurements() {
    use ponder_worker::recorded::latency::{fit_generate, fit_score};
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/results/scaling/latency");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let shipped = LatencyModel::load(&dir).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-15;
        let error = if let Some(cost) = shipped.generate {
            let (fit, error) = fit_generate(&shipped.generate_measures).unwrap();
            for (a, b) in [
                (fit.call_s, cost.call_s),
                (fit.prefill_token_s, cost.prefill_token_s),
                (fit.step_s, cost.step_s),
                (fit.step_sequence_s, cost.step_sequence_s),
                (fit.attention_token_s, cost.attention_token_s),
            ] {
                assert!(close(a, b), "{}: {a} vs {b}", dir.display());
            }
            error
        } else {
            let cost = shipped.score.unwrap();
            let (fit, error) = fit_score(&shipped.score_measures).unwrap();
            for (a, b) in [
                (fit.call_s, cost.call_s),
                (fit.token_s, cost.token_s),
                (fit.candidate_s, cost.candidate_s),
                (fit.attention_token_s, cost.attention_token_s),
            ] {
                assert!(close(a, b), "{}: {a} vs {b}", dir.display());
            }
            error
        };
        assert!(close(error.median, shipped.error.median) && close(error.max, shipped.error.max));
        // What docs/scaling.md promises of every shipped fit.
        assert!(
            error.median <= 0.2,
            "{}: median error {:.2}",
            dir.display(),
            error.median
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "one fit per bundled model");
}
