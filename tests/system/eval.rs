//! `ponder eval` end to end on the bundled models, small: the draw, the runs, the
//! replayed records, the policy fit with cross-validation, and the plots.

use ponder_cli::eval::{run, EvalConfig, Record};
use ponder_search::strategy::compute_optimal::Policy;
use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_fits_a_policy_the_orchestrator_can_load() {
    let out = std::env::temp_dir().join(format!("ponder-eval-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let cfg = EvalConfig {
        models: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"),
        verifier: None,
        per_level: 2,
        seed: 7,
        budgets: vec![1, 2, 4],
        run_budgets: Some(vec![4]),
        strategies: vec![
            "self_consistency".into(),
            "weighted_best_of_n".into(),
            "adaptive:8".into(),
            "beam_search:2".into(),
        ],
        out: out.clone(),
        fit: true,
    };
    let cells = run(cfg).await.unwrap();
    let text = std::fs::read_to_string(out.join("records.jsonl")).unwrap();
    let records: Vec<Record> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 12 questions: 3 replayed strategies x 3 budgets, beam search at 4, and
    // cross-validated compute-optimal at 3 budgets.
    assert_eq!(records.len(), 12 * (3 * 3 + 1 + 3));
    for r in &records {
        assert!(r.generations <= r.budget + 4, "{r:?}");
        assert_eq!(r.correct, r.answer == r.truth);
        if r.strategy == "weighted_best_of_n" {
            assert_eq!(r.generations, r.budget);
        }
    }
    let majority_at_1 = cells
        .iter()
        .find(|c| c.strategy == "self_consistency" && c.budget == 1)
        .unwrap();
    assert_eq!(majority_at_1.questions, 12);
    // Budget 1 is one sample: every sampling strategy gives the same answers.
    let at_1 = |s: &str| {
        let mut a: Vec<(String, String)> = records
            .iter()
            .filter(|r| r.strategy == s && r.budget == 1)
            .map(|r| (r.question.clone(), r.answer.clone()))
            .collect();
        a.sort();
        a
    };
    assert_eq!(at_1("self_consistency"), at_1("weighted_best_of_n"));
    let policy = Policy::from_file(&out.join("policy.json")).unwrap();
    assert_eq!(
        policy.table.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    for name in [
        "accuracy_vs_budget",
        "accuracy_by_bin",
        "compute_optimal_vs_best_of_n",
    ] {
        for ext in ["png", "svg"] {
            let len = std::fs::metadata(out.join(format!("{name}.{ext}")))
                .unwrap()
                .len();
            assert!(len > 1000, "{name}.{ext} is {len} bytes");
        }
    }
    std::fs::remove_dir_all(&out).unwrap();
}

/// `ponder eval --addr`: the same questions through a running cluster's API, every
/// strategy at every budget, with the same records and table as in-process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_measures_a_running_cluster_through_its_api() {
    let cluster = crate::common::embedded(1).await;
    let out = std::env::temp_dir().join(format!("ponder-eval-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let cells = ponder_cli::eval::remote::run(ponder_cli::eval::remote::RemoteEval {
        addr: cluster.addr().to_string(),
        connect: Default::default(),
        per_level: 2,
        seed: 7,
        budgets: vec![1, 4],
        strategies: vec!["majority".into(), "beam_search:2".into()],
        model: None,
        concurrency: 4,
        timeout: std::time::Duration::from_secs(60),
        out: out.clone(),
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(out.join("records.jsonl")).unwrap();
    let records: Vec<Record> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 12 questions x 2 strategies x 2 budgets, named by their canonical specs.
    assert_eq!(records.len(), 48);
    for r in &records {
        assert!(
            ["self_consistency", "beam_search:2"].contains(&r.strategy.as_str()),
            "{r:?}"
        );
        assert!(r.generations <= r.budget + 4, "{r:?}");
        assert_eq!(r.correct, r.answer == r.truth);
        assert!(r.latency_s > 0.0 && !r.replayed);
    }
    assert_eq!(cells.len(), 4);
    assert!(cells.iter().all(|c| c.questions == 12));
    assert!(out.join("summary.json").is_file());
    // An unknown strategy is refused before any query is sent.
    let bad = ponder_cli::eval::remote::run(ponder_cli::eval::remote::RemoteEval {
        addr: cluster.addr().to_string(),
        connect: Default::default(),
        per_level: 1,
        seed: 7,
        budgets: vec![1],
        strategies: vec!["mcts".into()],
        model: None,
        concurrency: 1,
        timeout: std::time::Duration::from_secs(10),
        out: out.clone(),
    })
    .await;
    assert!(bad.is_err());
    let _ = std::fs::remove_dir_all(&out);
    cluster.stop().await;
}

/// `ponder eval --flops` on a small set: draws and greedy answers on every rung of the
/// bundled ladder, the exchange-rate tables, a ladder policy the orchestrator can load
/// (naming the ladder's models), and both plots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flops_report_covers_every_model_and_fits_a_ladder_policy() {
    use ponder_cli::eval::ladder_run::{run, FlopsConfig};
    let out = std::env::temp_dir().join(format!("ponder-flops-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let config = || FlopsConfig {
        models: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"),
        per_level: 1,
        seed: 7,
        budgets: vec![1, 4],
        out: out.clone(),
        verifier: None,
    };
    let report = run(config()).await.unwrap();
    let ladder = ["arith-gen-xs", "arith-gen-s", "arith-gen-l"];
    assert_eq!(report.questions, 6);
    let names: Vec<&str> = report.models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(names, ladder);
    for m in &report.models {
        assert!(m.training_flops > 1e12 && m.training_tokens > 1e6, "{m:?}");
    }
    // 4 strategies per model, each at N = 1 and 4.
    assert_eq!(report.curves.len(), 3 * 4);
    for (name, points) in &report.curves {
        assert_eq!(points.len(), 2, "{name}");
        let majority = name.ends_with("self_consistency");
        for p in points {
            assert!(
                (0.0..=1.0).contains(&p.accuracy) && p.flops > 0.0,
                "{name} {p:?}"
            );
            // Majority never calls the verifier; the others pay for scoring.
            assert_eq!(majority, p.verifier_share == 0.0, "{name} {p:?}");
        }
    }
    // A larger model's sample costs more FLOPs.
    let greedy_flops: Vec<f64> = report.greedy.iter().map(|g| g.flops).collect();
    assert!(
        greedy_flops.windows(2).all(|w| w[0] < w[1]),
        "{greedy_flops:?}"
    );
    assert!(report
        .frontier
        .windows(2)
        .all(|w| w[0].flops <= w[1].flops && w[0].accuracy < w[1].accuracy));
    assert_eq!(report.compute_optimal.len(), 12);
    assert_eq!(report.versus.len(), 12);
    // Per level and pair of models (xs-s, xs-l, s-l), the greedy baseline (no
    // majority@8 at these budgets).
    assert_eq!(report.exchange.len(), 6 * 3);
    assert!(report.probes.generations == 4.0 && report.probes.verifier_share > 0.0);
    assert!(
        report.routing_ns > 0.0 && report.routing_ns < 1e6,
        "{} ns",
        report.routing_ns
    );

    let policy = Policy::from_file(&out.join("ladder-policy.json")).unwrap();
    assert_eq!(policy.probe_model.as_deref(), Some(ladder[0]));
    assert!(
        policy.models().iter().all(|m| ladder.contains(m)),
        "{:?}",
        policy.models()
    );
    assert_eq!(policy.flops_table.len(), 12);
    assert_eq!(policy.table.keys().copied().collect::<Vec<_>>(), vec![1, 4]);
    for (b, row) in &policy.table {
        for c in row.choices() {
            assert!(c.generations.unwrap() <= (*b).max(4), "{b}: {c:?}");
        }
    }
    for file in [
        "exchange.json",
        "exchange.md",
        "greedy.jsonl",
        "draws.jsonl",
        "draws-arith-gen-l.jsonl",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    for name in ["flops_accuracy", "seconds_accuracy"] {
        for ext in ["png", "svg"] {
            let len = std::fs::metadata(out.join(format!("{name}.{ext}")))
                .unwrap()
                .len();
            assert!(len > 1000, "{name}.{ext} is {len} bytes");
        }
    }
    // A second run reuses every draw and greedy answer: the same report, no sampling.
    let again = run(config()).await.unwrap();
    assert_eq!(
        serde_json::to_value(&again.greedy).unwrap(),
        serde_json::to_value(&report.greedy).unwrap()
    );
    std::fs::remove_dir_all(&out).unwrap();

    // `verifier` picks another of the manifest's verifiers: the 5.8x smaller one prices
    // the probes' scoring lower. An unknown name is refused before any model runs.
    let out_s = out.with_extension("prm-s");
    let _ = std::fs::remove_dir_all(&out_s);
    let with = |verifier: &str| FlopsConfig {
        out: out_s.clone(),
        verifier: Some(verifier.to_string()),
        ..config()
    };
    let err = run(with("arith-prm-nope")).await.unwrap_err();
    assert!(format!("{err:#}").contains("arith-prm-s"), "{err:#}");
    let cheaper = run(with("arith-prm-s")).await.unwrap();
    assert!(
        cheaper.probes.flops < report.probes.flops,
        "{} FLOPs with arith-prm-s, {} with the default",
        cheaper.probes.flops,
        report.probes.flops
    );
    std::fs::remove_dir_all(&out_s).unwrap();
}
