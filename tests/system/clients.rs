//! docs/clients.md's examples, run as written: every code block preceded by
//! `<!-- ci -->` (sh with bash, python with the CI venv) against the embedded cluster,
//! its ports swapped in for `localhost:8080` (the gateway) and `localhost:50051`. A
//! block marked `<!-- ci: grpcurl -->` runs with `grpcurl` standing for
//! tests/python/grpcurl_like.py (grpcurl is not packaged where CI installs from).

use crate::common::*;
use std::path::PathBuf;

/// The marked blocks of a markdown file: (language, code).
fn ci_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let runner = match line.trim() {
            "<!-- ci -->" => "",
            "<!-- ci: grpcurl -->" => "grpcurl",
            _ => continue,
        };
        let fence = lines.next().unwrap_or_default();
        let lang = fence.trim_start_matches("```").trim().to_string();
        assert!(
            fence.starts_with("```"),
            "a `<!-- ci -->` not before a code block"
        );
        let code: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let lang = match runner {
            "" => lang,
            r => format!("{lang}+{r}"),
        };
        blocks.push((lang, code.join("\n")));
    }
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_examples_in_the_docs_work_as_written() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/clients.md")).unwrap();
    let blocks = ci_blocks(&doc);
    assert!(blocks.len() >= 6, "{} marked examples", blocks.len());
    assert!(
        blocks.iter().any(|b| b.0 == "sh+grpcurl"),
        "the grpcurl block is not run"
    );
    let mut cfg = embedded_config(1);
    cfg.gateway_addr = Some("127.0.0.1:0".parse().unwrap());
    let cluster = ponder_cli::embedded::EmbeddedCluster::start(cfg)
        .await
        .unwrap();
    let gateway = cluster.gateway_addr().unwrap().to_string();
    let grpc = cluster.addr().to_string();
    for (lang, code) in blocks {
        let code = code
            .replace("localhost:8080", &gateway)
            .replace("localhost:50051", &grpc);
        let mut cmd = match lang.as_str() {
            "sh" => {
                let mut c = tokio::process::Command::new("bash");
                c.args(["-euo", "pipefail", "-c", &code]);
                c
            }
            "sh+grpcurl" => {
                let stand_in = format!(
                    "grpcurl() {{ {} tests/python/grpcurl_like.py \"$@\"; }}\n",
                    python().display()
                );
                let mut c = tokio::process::Command::new("bash");
                c.args(["-euo", "pipefail", "-c", &(stand_in + &code)]);
                c
            }
            "python" => {
                let mut c = tokio::process::Command::new(python());
                c.args(["-c", &code]);
                c
            }
            other => panic!("no runner for a `{other}` example"),
        };
        let out = cmd.current_dir(&root).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !stdout.trim().is_empty(),
            "this example failed:\n{code}\n--- stdout\n{stdout}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // An answer came back (whether the small bundled model got it right is the
        // evaluation's business, not this test's).
        assert!(
            stdout.chars().any(|c| c.is_ascii_digit()),
            "{code}\n{stdout}"
        );
    }
    cluster.stop().await;
}
