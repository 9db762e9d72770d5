//! The recorded backend reproduces the real engine at N = 1, in the same run
//! (docs/scaling.md, "N = 1, call by call"): `bench/scaling/probe.py fidelity --pin
//! --fresh` fits the latency model on this machine, records the real cluster (the
//! bundled models, each node on a core of its own) serving a closed loop, then serves
//! the same loop from that recording. Throughput at saturation (what the knee sits
//! under) and accuracy must agree within 10%, and nothing may fail.
//!
//! A binary of its own, as tests/chaos.rs, so that no other test shares the two cores
//! the nodes are pinned to. Needs `etcd`, `taskset` and python3 (.ci/run has them).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The closed loop: enough queries in flight to keep the PRM (the N = 1 bottleneck)
/// busy, few enough that the recorded run's queue is the real one's.
const CONCURRENCY: &str = "6";
const SECONDS: &str = "30";

#[test]
fn recorded_nodes_reproduce_the_real_engine_at_n1() {
    let ponder = PathBuf::from(env!("CARGO_BIN_EXE_ponder"));
    let load = ponder.with_file_name("ponder-load");
    assert!(
        load.is_file(),
        "{} is missing: cargo build --release -p ponder-load",
        load.display()
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("ponder-fidelity-{}.json", std::process::id()));
    let status = Command::new("python3")
        .arg(repo.join("bench/scaling/probe.py"))
        .args(["fidelity", "--pin", "--fresh", "--concurrency", CONCURRENCY])
        .args(["--duration", SECONDS, "--out"])
        .arg(&out)
        .env("PONDER_BIN", &ponder)
        .env("PONDER_LOAD_BIN", &load)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running bench/scaling/probe.py");
    assert!(status.success(), "the fidelity probe failed");
    let text = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).ok();
    let report: Value = serde_json::from_str(&text).unwrap();
    let run = |kind: &str| {
        report["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} run\n{text}"))
            .clone()
    };
    let (real, recorded) = (run("real"), run("recorded"));
    for r in [&real, &recorded] {
        assert_eq!(r["failed"].as_u64(), Some(0), "{text}");
        assert!(r["sent"].as_u64().unwrap() >= 30, "too few queries\n{text}");
    }
    let ratio = |what: &str| recorded[what].as_f64().unwrap() / real[what].as_f64().unwrap();
    let throughput = ratio("throughput");
    assert!(
        (throughput - 1.0).abs() <= 0.10,
        "recorded / real throughput {throughput:.3}, outside 10%\n{text}"
    );
    let accuracy = ratio("accuracy");
    assert!(
        (accuracy - 1.0).abs() <= 0.10,
        "recorded / real accuracy {accuracy:.3}, outside 10%\n{text}"
    );
}
