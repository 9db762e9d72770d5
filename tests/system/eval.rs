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
