//! The OpenAI-compatible HTTP gateway (docs/gateway.md): the official `openai` Python
//! package against the embedded cluster, cancellation by a client that goes away, and
//! the gate (API keys, rate limits) and size caps as HTTP clients see them.

use crate::common::*;
use ponder_cluster::secret::Secret;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 exchange on a fresh connection: (status, headers, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// The `error` object of an OpenAI-style error body.
fn error_of(body: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {body}"));
    v["error"].clone()
}

/// Whether the orchestrator counted a `method` call as cancelled.
fn cancelled(metrics: &str, method: &str) -> bool {
    metrics.lines().any(|l| {
        l.starts_with("ponder_requests_total")
            && l.contains(&format!("method=\"{method}\""))
            && l.contains("code=\"CANCELLED\"")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_package_can_solve_stream_and_is_refused_by_name() {
    let mut cfg = embedded_config(1);
    cfg.gateway_addr = Some("127.0.0.1:0".parse().unwrap());
    let cluster = ponder_cli::embedded::EmbeddedCluster::start(cfg)
        .await
        .unwrap();
    let gw = cluster.gateway_addr().expect("the gateway serves");
    let stdout = python_script("openai_client.py", vec![format!("http://{gw}/v1")]).await;
    for line in [
        "chat answer 85",
        "completion answer 85",
        "stream answer 85",
        "completion stream answer 85",
        "refused n: n: Ponder returns one answer per request",
        "refused temperature:",
        "refused tools:",
        "refused model: model_id \"gpt-4o\" is not served",
        "refused ponder.budget: budget.max_generations must be between 1 and 4096",
        "refused messages:",
        "gave up on a unary request",
        "closed a stream",
    ] {
        assert!(stdout.contains(line), "{line:?} not in {stdout}");
    }
    // Both abandoned queries stop: their handlers are dropped and counted cancelled.
    let metrics = cluster.metrics.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let m = metrics.render();
            cancelled(&m, "Solve") && cancelled(&m, "SolveStream")
        })
        .await,
        "the abandoned queries were not cancelled:\n{}",
        metrics.render()
    );

    // Caps and errors a raw HTTP client sees.
    let big = format!(
        r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "1".repeat(300_000)
    );
    let (status, _, body) = http(gw, "POST", "/v1/chat/completions", &[], &big).await;
    assert_eq!(status, 413, "{body}");
    assert!(!error_of(&body)["message"].is_null());
    let refusals = || {
        crate::metrics::sample(
            &cluster.metrics.render(),
            "ponder_refusals_total",
            &["reason=\"invalid_argument\""],
        )
        .unwrap_or(0.0)
    };
    let before = refusals();
    let (status, _, body) = http(gw, "POST", "/v1/chat/completions", &[], "{").await;
    assert_eq!(status, 400);
    assert_eq!(
        refusals(),
        before + 1.0,
        "the gateway's own refusal is counted"
    );
    assert!(
        error_of(&body)["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    // /v1/models is a ClusterStatus call, timed and counted like one.
    let (status, _, _) = http(gw, "GET", "/v1/models", &[], "").await;
    assert_eq!(status, 200);
    let t = cluster.metrics.render();
    assert!(
        crate::metrics::sample(
            &t,
            "ponder_requests_total",
            &["method=\"ClusterStatus\"", "code=\"OK\""]
        )
        .is_some_and(|n| n >= 1.0),
        "{t}"
    );
    let (status, _, body) = http(gw, "GET", "/v2/anything", &[], "").await;
    assert_eq!(status, 404);
    assert_eq!(error_of(&body)["type"], "not_found_error");
    let question = r#"{"messages": [{"role": "user", "content": "47+38"}]}"#;
    let (status, _, body) = http(
        gw,
        "POST",
        "/v1/chat/completions",
        &[("x-request-timeout", "never")],
        question,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_of(&body)["param"], "x-request-timeout");
    // A valid timeout is the query's deadline: a search far longer than 0.3 s comes
    // back by then, as a partial answer (or 504 with nothing to answer), as over gRPC.
    let long = format!(
        r#"{{"messages": [{{"role": "user", "content": "{LONG_QUESTION}"}}],
            "ponder": {{"budget": 256, "strategy": "beam_search:4"}}}}"#
    );
    let started = std::time::Instant::now();
    let (status, _, body) = http(
        gw,
        "POST",
        "/v1/chat/completions",
        &[("x-request-timeout", "0.3")],
        &long,
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the deadline did not hold: {took:?}"
    );
    match status {
        200 => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["ponder"]["partial"], true, "{body}");
            assert_eq!(v["choices"][0]["finish_reason"], "length", "{body}");
        }
        504 => assert_eq!(error_of(&body)["type"], "timeout_error", "{body}"),
        other => panic!("{other}: {body}"),
    }
    // The request id goes both ways.
    let (status, head, body) = http(
        gw,
        "POST",
        "/v1/chat/completions",
        &[("x-request-id", "gw-test-1")],
        question,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("x-request-id: gw-test-1"), "{head}");
    assert!(body.contains("\"id\":\"chatcmpl-gw-test-1\""), "{body}");
    cluster.stop().await;
}

const KEY: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_passes_the_same_gate_as_grpc() {
    let cluster = embedded(1).await;
    let mut args = ponder_orchestrator::OrchestratorArgs::new(Default::default());
    args.generators = vec![cluster.generators[0].node.addr.to_string()];
    args.access.api_keys = vec![Secret::new(format!("team:{KEY}"))];
    args.access.rate_limit = 0.2;
    args.access.rate_burst = Some(2);
    args.gateway.gateway_addr = Some("127.0.0.1:0".parse().unwrap());
    let o = ponder_orchestrator::start(args, Default::default())
        .await
        .unwrap();
    let gw = o.gateway.as_ref().unwrap().addr;
    let (status, _, body) = http(gw, "GET", "/v1/models", &[], "").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_of(&body)["type"], "authentication_error");
    let (status, _, body) = http(
        gw,
        "GET",
        "/v1/models",
        &[("authorization", "Bearer ffffffffffffffffffffffffffffffff")],
        "",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let bearer = format!("Bearer {KEY}");
    let auth = [("authorization", bearer.as_str())];
    for _ in 0..2 {
        let (status, _, body) = http(gw, "GET", "/v1/models", &auth, "").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"id\":\"default\""), "{body}");
    }
    // The burst is spent: 429 with Retry-After, as RESOURCE_EXHAUSTED with RetryInfo.
    let (status, head, body) = http(gw, "GET", "/v1/models", &auth, "").await;
    assert_eq!(status, 429, "{body}");
    assert!(head.contains("retry-after: "), "{head}");
    let e = error_of(&body);
    assert_eq!(e["type"], "rate_limit_error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("rate limit exceeded for API key team"),
        "{e}"
    );
    o.stop().await;
    cluster.stop().await;
}

/// Beside a TLS gRPC port the gateway serves HTTPS with the same certificate, so API
/// keys are never sent in the clear; a plain HTTP request there gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_tls_the_gateway_serves_https() {
    let pki = crate::common::security::Pki::new("gateway");
    let cert = pki.issue("orchestrator", &["localhost", "127.0.0.1"]);
    let cluster = embedded(1).await;
    let mut args = ponder_orchestrator::OrchestratorArgs::new(Default::default());
    args.generators = vec![cluster.generators[0].node.addr.to_string()];
    args.node.tls.tls_cert = Some(cert.cert.clone());
    args.node.tls.tls_key = Some(cert.key.clone());
    args.gateway.gateway_addr = Some("127.0.0.1:0".parse().unwrap());
    let o = ponder_orchestrator::start(args, Default::default())
        .await
        .unwrap();
    let gw = o.gateway.as_ref().unwrap();
    assert_eq!(gw.scheme, "https");
    let url = format!("https://localhost:{}/v1/models", gw.addr.port());
    let fetch = "import ssl, sys, urllib.request\n\
         ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
         print(urllib.request.urlopen(sys.argv[1], context=ctx, timeout=10).read().decode())";
    let out = tokio::process::Command::new(python())
        .args(["-c", fetch, &url, pki.ca().to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\"id\":\"default\""),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, _) = http(gw.addr, "GET", "/v1/models", &[], "").await;
    assert_eq!(status, 0, "plain HTTP was answered on the HTTPS port");
    o.stop().await;
    cluster.stop().await;
}

/// The gateway takes API keys, not client certificates: beside a port that requires
/// them it would be a way around mTLS, so the orchestrator refuses to start it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_refused_beside_required_client_certificates() {
    let mut args = ponder_orchestrator::OrchestratorArgs::new(Default::default());
    args.generators = vec!["127.0.0.1:1".into()];
    args.node.tls.tls_cert = Some("unread.pem".into());
    args.node.tls.tls_key = Some("unread.key".into());
    args.node.tls.tls_client_auth = Some(ponder_cluster::tls::ClientAuth::Required);
    args.gateway.gateway_addr = Some("127.0.0.1:0".parse().unwrap());
    let e = match ponder_orchestrator::start(args, Default::default()).await {
        Ok(_) => panic!("a gateway started beside --tls-client-auth required"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("it would bypass mTLS"), "{e}");
}

/// `ponder up` serves the gateway without being asked (only its address is moved off
/// 8080 here), and prints the public ready line `gateway listening on http://<addr>`
/// once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ponder_up_serves_the_gateway_by_default_and_says_where() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ponder"))
        .args([
            "up",
            "--default-only",
            "--orchestrator-addr",
            "127.0.0.1:0",
            "--gateway-addr",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(2)
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(120), lines)
        .await
        .expect("ponder up printed its ready lines")
        .unwrap();
    assert!(
        lines[0].starts_with("orchestrator listening on "),
        "{lines:?}"
    );
    let addr: SocketAddr = lines[1]
        .strip_prefix("gateway listening on http://")
        .unwrap_or_else(|| panic!("{lines:?}"))
        .parse()
        .unwrap();
    let (status, _, body) = http(addr, "GET", "/v1/models", &[], "").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&generator_model_id()), "{body}");
}
