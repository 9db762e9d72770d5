//! The `ponder` command as a script uses it: every strategy in `solve --help`,
//! `--version` on every role, `--json` output that parses, and an exit status per kind
//! of failure (2 usage, 3 refused by the server, 4 unreachable; `ponder_cli::exit`).

use crate::common::*;
use std::process::Command;

fn ponder(args: &[&str]) -> (i32, String, String) {
    ponder_with_env(args, &[])
}

/// [`ponder`] with these variables set in its environment.
fn ponder_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ponder"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running ponder");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_strategy_and_every_role_has_a_version() {
    let (code, help, _) = ponder(&["solve", "--help"]);
    assert_eq!(code, 0);
    for name in ponder_search::StrategyKind::NAMES {
        assert!(
            help.contains(name),
            "solve --help does not list {name}:\n{help}"
        );
    }
    for flag in [
        "--temperature",
        "--aggregation",
        "--strict",
        "--json",
        "--model",
    ] {
        assert!(help.contains(flag), "solve --help has no {flag}");
    }
    let version = env!("CARGO_PKG_VERSION");
    for args in [
        &["--version"][..],
        &["node", "generator", "--version"],
        &["node", "verifier", "--version"],
        &["node", "orchestrator", "--version"],
    ] {
        let (code, out, _) = ponder(args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains(version), "{args:?}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_tells_usage_refusal_and_transport_apart() {
    let (code, _, err) = ponder(&["solve", "1+1", "--timeout", "-1"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ponder(&["solve", "1+1", "--bogus-flag"]);
    assert_eq!(code, 2, "{err}");
    let closed = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = ponder(&["solve", "1+1", "--addr", &closed]);
    assert_eq!(code, 4, "{err}");

    let cluster = embedded(1).await;
    let addr = cluster.addr().to_string();
    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ponder(&args)
        })
        .await
        .unwrap()
    };
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = ["solve", "47+38", "--budget", "2", "--addr", &addr]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (code, _, err) = run(args(&["--temperature", "9"])).await;
    assert_eq!(code, 3, "a refused request: {err}");
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("temperature"),
        "{err}"
    );

    let (code, out, err) = run(args(&["--json", "--strategy", "self_consistency"])).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["strategy"], "self_consistency");
    assert!(v["usage"]["generations"].as_u64().unwrap() <= 2);
    assert!(!v["model_id"].as_str().unwrap().is_empty());

    let (code, out, err) = run(args(&["--json", "--stream"])).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert!(lines.last().unwrap().get("answer").is_some(), "{out}");

    let (code, out, err) = run(vec![
        "status".into(),
        "--json".into(),
        "--addr".into(),
        addr.clone(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["members"].as_array().unwrap().len() >= 2);
    assert!(v["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["default"] == true));
    cluster.stop().await;
}

#[test]
fn a_role_reads_its_configuration_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orchestrator.toml");
    // A value only the file sets reaches the orchestrator's own checks...
    std::fs::write(&file, "max-queries = 0\ngenerators = [\"127.0.0.1:1\"]\n").unwrap();
    let path = file.to_str().unwrap();
    let (code, _, err) = ponder(&["node", "orchestrator", "--config", path]);
    assert_ne!(code, 0);
    assert!(err.contains("--max-queries must be at least 1"), "{err}");
    // ... and the command line overrides it: now the next check speaks.
    let (code, _, err) = ponder(&[
        "node",
        "orchestrator",
        "--config",
        path,
        "--max-queries",
        "4",
        "--default-generations",
        "0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--default-generations"), "{err}");
    // A PONDER_* variable overrides the file too (and a flag the variable).
    let env = [("PONDER_MAX_QUERIES", "4")];
    let args = ["node", "orchestrator", "--config", path];
    let (code, _, err) =
        ponder_with_env(&[&args[..], &["--default-generations", "0"]].concat(), &env);
    assert!(code != 0 && err.contains("--default-generations"), "{err}");
    let (_, _, err) = ponder_with_env(&[&args[..], &["--max-queries", "0"]].concat(), &env);
    assert!(err.contains("--max-queries must be at least 1"), "{err}");
    // A key that is no flag is a usage error naming it.
    std::fs::write(&file, "max-querys = 4\n").unwrap();
    let (code, _, err) = ponder(&["node", "orchestrator", "--config", path]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("max-querys"), "{err}");
}
