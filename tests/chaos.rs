//! The fault-injection suite, short form: `deploy/local/chaos.sh --short` against a
//! multi-process cluster with a real etcd, under ponder-load, and the targets of
//! docs/reliability.md asserted on its summary: no query lost in any scenario (the
//! partitions of scenarios 7 to 9 included), overload refused only as
//! RESOURCE_EXHAUSTED, and the rogue member of scenario 10 refused unasked. Needs `etcd`
//! on PATH and the CI's .venv (grpcio-tools, for the rogue), which .ci/run installs, and
//! the ponder-load binary (built with the workspace).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn faults_under_load_lose_no_query() {
    let ponder = PathBuf::from(env!("CARGO_BIN_EXE_ponder"));
    let load = ponder.with_file_name("ponder-load");
    assert!(
        load.is_file(),
        "{} is missing: cargo build --release -p ponder-load",
        load.display()
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("ponder-chaos-test-{}", std::process::id()));
    let status = Command::new("bash")
        .arg(repo.join("deploy/local/chaos.sh"))
        .args(["--short", "--out"])
        .arg(&out)
        .arg("--bin")
        .arg(&ponder)
        .arg("--load-bin")
        .arg(&load)
        .status()
        .expect("running chaos.sh");
    assert!(status.success(), "chaos.sh failed; see {}", out.display());
    let text = std::fs::read_to_string(out.join("summary.json")).unwrap();
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(rows.len(), 11, "{text}");
    for row in &rows {
        let scenario = row["scenario"].as_str().unwrap();
        let sent = row["sent"].as_u64().unwrap();
        let failed = row["failed"].as_u64().unwrap();
        assert!(sent >= 10, "scenario {scenario}: only {sent} sent\n{text}");
        assert!(row["orchestrator_alive"].as_bool().unwrap(), "{text}");
        if scenario == "6" {
            // Overload: rejections only as RESOURCE_EXHAUSTED.
            let errors = row["errors"].as_object().unwrap();
            assert!(
                errors.keys().all(|k| k == "RESOURCE_EXHAUSTED"),
                "scenario 6 failed otherwise: {errors:?}"
            );
            assert_eq!(
                row["failed_after_recovery"].as_u64(),
                Some(0),
                "no full recovery after the overload\n{text}"
            );
        } else {
            assert_eq!(failed, 0, "scenario {scenario} lost queries\n{text}");
        }
        if scenario == "10" {
            // The rogue generator is refused: it never sees a prompt.
            assert_eq!(row["rogue_generate_calls"].as_i64(), Some(0), "{text}");
            assert!(row["refusal_warnings"].as_u64().unwrap() >= 1, "{text}");
        }
    }
    std::fs::remove_dir_all(&out).ok();
}
