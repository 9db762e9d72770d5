//! The crate graph matches the design (docs/architecture.md): the strategies, the
//! cluster plumbing, the orchestrator and the load driver link no model code, the
//! engine and the strategies know nothing of each other, and the two worker roles share
//! the worker crate instead of importing each other. Checked with `cargo tree` on the
//! real manifests, so a new dependency that breaks the rule fails here.

use std::process::Command;

/// The normal (non-dev, non-build) dependency closure of `package`, one crate name a line.
fn closure(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

const MODEL_CODE: [&str; 3] = ["candle-", "tokenizers", "onig"];

#[test]
fn crates_that_run_no_model_link_no_model_code() {
    for package in [
        "ponder-search",
        "ponder-cluster",
        "ponder-orchestrator",
        "ponder-load",
        "ponder-arith",
        "ponder-proto",
    ] {
        let deps = closure(package);
        assert!(deps.len() > 1, "{package}: empty closure {deps:?}");
        let model: Vec<&String> = deps
            .iter()
            .filter(|d| MODEL_CODE.iter().any(|m| d.starts_with(m)) || *d == "ponder-engine")
            .collect();
        assert!(model.is_empty(), "{package} links model code: {model:?}");
    }
}

#[test]
fn the_check_sees_model_code_where_it_is() {
    // A positive control: the worker crate does link the engine, so a closure that
    // lacked candle here would mean the check above looks at nothing.
    let worker = closure("ponder-worker");
    assert!(
        worker.iter().any(|d| d.starts_with("candle-")),
        "{worker:?}"
    );
    assert!(worker.iter().any(|d| d == "tokenizers"));
}

#[test]
fn the_engine_and_the_strategies_know_nothing_of_each_other() {
    assert!(!closure("ponder-engine").contains(&"ponder-search".to_string()));
    assert!(!closure("ponder-search").contains(&"ponder-engine".to_string()));
}

#[test]
fn the_worker_roles_share_the_worker_crate_not_each_other() {
    let verifier = closure("ponder-verifier");
    assert!(!verifier.contains(&"ponder-generator".to_string()));
    assert!(verifier.contains(&"ponder-worker".to_string()));
    let generator = closure("ponder-generator");
    assert!(!generator.contains(&"ponder-verifier".to_string()));
    assert!(generator.contains(&"ponder-worker".to_string()));
}
