//! Bounded compute on a real cluster (issue H2): the operator's caps on one query, a
//! worker's smaller batch limit met by splitting calls, and the per-client share of
//! the queries in progress.

use crate::common::*;
use ponder_proto::v1 as pb;
use ponder_proto::v1::generator_client::GeneratorClient;
use std::time::Duration;
use tonic::Code;

fn strategy(kind: pb::strategy::Kind) -> Option<pb::Strategy> {
    Some(pb::Strategy { kind: Some(kind) })
}

/// A generator started with `generator_args` beside its model, a verifier, and an
/// orchestrator with `configure`d limits.
async fn cluster(
    generator_args: &[&str],
    configure: impl FnOnce(&mut ponder_orchestrator::OrchestratorArgs),
) -> (Vec<Proc>, ponder_orchestrator::OrchestratorNode, String) {
    let gen = generator_model();
    let prm = verifier_model();
    let mut args = vec!["--model", gen.to_str().unwrap()];
    args.extend_from_slice(generator_args);
    let (g, ag) = spawn_node("generator", &args);
    let (v, av) = spawn_node("verifier", &["--model", prm.to_str().unwrap()]);
    let mut args = ponder_orchestrator::OrchestratorArgs::new(Default::default());
    args.generators = vec![ag.clone()];
    args.verifiers = vec![av];
    configure(&mut args);
    let o = ponder_orchestrator::start(args, Default::default())
        .await
        .unwrap();
    (vec![g, v], o, ag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_caps_hold_and_calls_above_a_workers_limit_are_split() {
    let (_procs, o, generator) = cluster(&["--max-active-sequences", "8"], |a| {
        a.limits.max_generations = 32
    })
    .await;
    let mut g = GeneratorClient::connect(format!("http://{generator}"))
        .await
        .unwrap();
    let info = g
        .model_info(pb::ModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.max_samples_per_request, 8, "the worker says its limit");
    assert_eq!(
        info.kv_cache_dtype, "f16",
        "--kv-cache-dtype auto takes the bundled model's manifest entry"
    );
    let mut c = client(o.node.addr).await;
    // Members' addresses are not shown to API callers unless the operator asks.
    let status = c
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.members.is_empty());
    assert!(status.members.iter().all(|m| m.address.is_empty()));
    // Beam search asks for all 24 first steps in one call, which the worker would
    // refuse (n > 8): split into 8+8+8, it answers.
    let mut beam = request("(47+38)*3-19", 24, 3);
    beam.strategy = strategy(pb::strategy::Kind::BeamSearch(pb::BeamSearch {
        beam_width: 4,
        max_rounds: 0,
    }));
    let r = c.solve(beam).await.unwrap().into_inner();
    assert!(!r.answer.is_empty(), "{}", r.solution);
    assert_eq!(r.usage.unwrap().generations, 24);
    // Above the operator's cap: refused, naming the flag.
    let e = c.solve(request("1+1", 33, 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("at most 32") && e.message().contains("--max-generations"),
        "{}",
        e.message()
    );
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holds_at_most_its_share_of_the_queries() {
    let (_procs, o, _) = cluster(&[], |a| a.max_queries_per_client = 1).await;
    let addr = o.node.addr;
    // A long query: DVTS of 32 one-wide subtrees on a level-6 question.
    let mut long = request("12*(7+6)-45+3*(8+9)-7", 32, 1);
    long.strategy = strategy(pb::strategy::Kind::Dvts(pb::Dvts {
        beam_width: 1,
        max_rounds: 0,
    }));
    let first = tokio::spawn(async move { client(addr).await.solve(long).await });
    let mut c = client(addr).await;
    let mut refused = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        match c.solve(request("1+1", 1, 2)).await {
            Err(e) if e.code() == Code::ResourceExhausted => {
                refused = Some(e);
                break;
            }
            Err(e) => panic!("unexpected refusal: {e}"),
            Ok(_) => assert!(!first.is_finished(), "the long query ended first"),
        }
    }
    let e = refused.expect("the second query of the same client was refused");
    assert!(
        e.message().contains("already has 1 queries in progress"),
        "{}",
        e.message()
    );
    first.await.unwrap().expect("the first query answers");
    // Its slot is given back: the next query of the client is admitted.
    c.solve(request("1+1", 1, 2)).await.unwrap();
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_worker_queue_is_backpressure_not_a_failure() {
    // Two requests queued at most: most calls of six concurrent queries find the
    // queue full. They wait and come back; none fails and none ejects the worker.
    let (_procs, o, _) = cluster(&["--max-queued", "2"], |_| {}).await;
    let addr = o.node.addr;
    let tasks: Vec<_> = (0..6u64)
        .map(|i| {
            tokio::spawn(async move {
                let mut r = request("(47+38)*3-19", 8, i);
                r.strategy = strategy(pb::strategy::Kind::SelfConsistency(pb::SelfConsistency {}));
                client(addr).await.solve(r).await
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.is_ok(), "a query failed on a busy worker: {r:?}");
    }
    let members = o.registry.members(ponder_cluster::Role::Generator);
    assert!(
        members.iter().all(|m| !m.is_ejected()),
        "the busy worker was ejected"
    );
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_budgets_are_charged_per_key_and_keys_reload() {
    const ALICE: &str = "alice-key-0123456789abcdef";
    const BOB: &str = "bob-key-0123456789abcdef0";
    const ALICE_NEW: &str = "alice-key-rotated-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("alice:{ALICE}\nbob:{BOB}\n")).unwrap();
    let metrics = ponder_cluster::metrics::Metrics::new();
    let gen = generator_model();
    let (_g, ag) = spawn_node("generator", &["--model", gen.to_str().unwrap()]);
    let mut args = ponder_orchestrator::OrchestratorArgs::new(Default::default());
    args.generators = vec![ag];
    args.access.api_keys_file = Some(keys.clone());
    // One generation a second, bursts of 24: two budget-12 queries, then a wait.
    args.access.rate_limit_generations = 1.0;
    args.access.rate_burst_generations = Some(24);
    let o = ponder_orchestrator::start(args, metrics.clone())
        .await
        .unwrap();
    let addr = o.node.addr;
    let solve = |key: &'static str, budget: u32| async move {
        let mut c = client(addr).await;
        let mut req = tonic::Request::new(request("47+38", budget, 1));
        req.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        c.solve(req).await
    };
    let mut anonymous = client(addr).await;
    let e = anonymous.solve(request("1+1", 1, 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    solve(ALICE, 12).await.unwrap();
    solve(ALICE, 12).await.unwrap();
    let e = solve(ALICE, 12).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("generations per second"),
        "{}",
        e.message()
    );
    // google.rpc.RetryInfo says when: what a client library's retry policy reads.
    use tonic_types::StatusExt;
    let delay = e
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(delay > std::time::Duration::ZERO && delay < std::time::Duration::from_secs(60));
    solve(BOB, 12).await.expect("bob has his own bucket");
    let text = metrics.render();
    for line in [
        r#"ponder_refusals_total{what="request",reason="unauthenticated"} 1"#,
        r#"ponder_refusals_total{what="request",reason="generation_rate_limited"} 1"#,
        r#"ponder_client_queries_total{client="alice",code="OK"} 2"#,
        r#"ponder_client_generations_total{client="alice"} 24"#,
        r#"ponder_client_queries_total{client="bob",code="OK"} 1"#,
    ] {
        assert!(text.contains(line), "no {line} in\n{text}");
    }
    // Rotation: alice's key is replaced in the file; within a few seconds the old one
    // is refused and the new one accepted, with no restart.
    std::fs::write(&keys, format!("alice:{ALICE_NEW}\nbob:{BOB}\n")).unwrap();
    let mut rotated = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if solve(ALICE, 1)
            .await
            .is_err_and(|e| e.code() == Code::Unauthenticated)
        {
            rotated = true;
            break;
        }
    }
    assert!(
        rotated,
        "the old key still works 10 s after the file changed"
    );
    // The new key's bucket is alice's (same name): wait for a token.
    tokio::time::sleep(Duration::from_secs(2)).await;
    solve(ALICE_NEW, 1).await.expect("the new key works");
    o.stop().await;
}
