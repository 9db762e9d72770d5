//! A verifier ensemble (`prm.json` `members`): each member reads every step as it would
//! alone, and the readings are combined step by step, then chained.

use ponder_engine::fixtures::{write_tiny_model, TinySpec};
use ponder_engine::{load, LoadOptions, ModelWorker, ScoreRequest, WorkerConfig};
use std::path::Path;

const LIKELIHOOD: &str =
    r#""kind": "likelihood", "question_template": "Q: {question}\n", "after_tag": "\n""#;

fn write_prm_json(dir: &Path, extra: &str) {
    std::fs::write(dir.join("prm.json"), format!("{{{LIKELIHOOD}{extra}}}")).unwrap();
}

/// A tiny Llama of `seed` in `dir`, a likelihood verifier with `extra` prm.json fields.
fn tiny_verifier(dir: &Path, seed: u64, extra: &str) {
    write_tiny_model(
        dir,
        &TinySpec {
            seed,
            ..TinySpec::llama()
        },
    )
    .unwrap();
    write_prm_json(dir, extra);
}

async fn scores(dir: &Path, request: &ScoreRequest) -> Vec<Vec<f32>> {
    let worker = ModelWorker::spawn(
        load(dir, &LoadOptions::default()).unwrap(),
        WorkerConfig::default(),
    );
    worker.score(request.clone()).await.unwrap().scores
}

fn request() -> ScoreRequest {
    ScoreRequest {
        question: "(12+7)*3".into(),
        candidates: vec![
            vec!["12+7=19".into(), "19*3=57".into(), "Answer: 57".into()],
            vec!["12+7=18".into(), "Answer: 54".into()],
        ],
    }
}

#[tokio::test]
async fn an_ensemble_combines_its_members_readings_then_chains_them() {
    let request = request();
    // Each model alone, unchained.
    let alone = tempfile::tempdir().unwrap();
    tiny_verifier(alone.path(), 1, "");
    let primary = scores(alone.path(), &request).await;
    let other = tempfile::tempdir().unwrap();
    tiny_verifier(other.path(), 7, "");
    let member = scores(other.path(), &request).await;
    assert_ne!(primary, member, "the two models must read differently");

    // The same two as an ensemble: the member inside the primary's directory.
    let ensemble = |extra: &'static str| {
        let dir = tempfile::tempdir().unwrap();
        tiny_verifier(dir.path(), 1, extra);
        tiny_verifier(&dir.path().join("second"), 7, r#", "chain": "min""#);
        dir
    };
    let product_dir = ensemble(r#", "chain": "product", "members": ["second"]"#);
    let product = scores(product_dir.path(), &request).await;
    let min_dir = ensemble(r#", "chain": "min", "members": ["second"], "combine": "min""#);
    let min = scores(min_dir.path(), &request).await;

    for (c, ((a, b), (p, m))) in primary
        .iter()
        .zip(&member)
        .zip(product.iter().zip(&min))
        .enumerate()
    {
        assert_eq!((p.len(), m.len()), (a.len(), a.len()));
        let (mut running, mut lowest) = (1.0f32, 1.0f32);
        for k in 0..a.len() {
            running *= a[k] * b[k];
            lowest = lowest.min(a[k].min(b[k]));
            assert!(
                (p[k] - running).abs() <= 1e-5 * running.max(1e-3),
                "candidate {c} step {k}: product {} against {running}",
                p[k]
            );
            assert!(
                (m[k] - lowest).abs() < 1e-6,
                "candidate {c} step {k}: min {} against {lowest}",
                m[k]
            );
        }
    }

    // FLOPs are counted over every member's parameters.
    let single = load(alone.path(), &LoadOptions::default()).unwrap();
    let both = load(product_dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(both.info.parameters, 2 * single.info.parameters);
}

#[test]
fn members_outside_the_directory_or_missing_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (members, expected) in [
        (r#"["../elsewhere"]"#, "must be a directory inside"),
        (r#"["/abs"]"#, "must be a directory inside"),
        (r#"["absent"]"#, "member \"absent\""),
    ] {
        tiny_verifier(dir.path(), 1, &format!(r#", "members": {members}"#));
        let err = match load(dir.path(), &LoadOptions::default()) {
            Ok(_) => panic!("members {members} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "{members}: {err}");
    }
}
