//! The metrics operators alert and scale on (docs/metrics.md), read from `/metrics`'s
//! text after real queries on the embedded cluster.

use crate::common::*;
use ponder_proto::v1 as pb;
use std::time::Duration;

/// The value of the first sample of `name` whose labels include every one of `labels`
/// (`key="value"` strings).
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_orchestrator_gauges_follow_real_queries() {
    let cluster = embedded(1).await;
    let mut c = client(cluster.addr()).await;
    // The same question twice: the second prefill finds the first's prompt cached.
    for seed in [1, 2] {
        c.solve(request("(47+38)*3-19", 4, seed)).await.unwrap();
    }
    let mut events = c
        .solve_stream(request("85*3-19", 4, 3))
        .await
        .unwrap()
        .into_inner();
    while events.message().await.unwrap().is_some() {}
    // Far too many generations for the deadline (hot, so that few samples are twins):
    // answered partial.
    let mut r = request(LONG_QUESTION, 1024, 4);
    r.strategy = Some(pb::Strategy {
        kind: Some(pb::strategy::Kind::Name("self_consistency".into())),
    });
    r.temperature = 2.0;
    let mut req = tonic::Request::new(r);
    req.set_timeout(Duration::from_secs(2));
    assert!(c.solve(req).await.unwrap().into_inner().partial);

    let metrics = cluster.metrics.clone();
    let text = || metrics.render();
    // The worker's gauges refresh every second.
    assert!(
        eventually(Duration::from_secs(5), || {
            sample(
                &text(),
                "ponder_prefix_cache_lookups_total",
                &["result=\"hit\""],
            )
            .is_some_and(|n| n > 0.0)
        })
        .await,
        "{}",
        text()
    );
    let t = text();
    let gen = "role=\"generator\"";
    assert!(sample(&t, "ponder_prefix_cache_saved_tokens_total", &[gen]).unwrap() > 0.0);
    assert!(sample(&t, "ponder_prefix_cache_tokens", &[gen]).unwrap() > 0.0);
    for state in ["running", "waiting"] {
        let s = format!("state=\"{state}\"");
        assert!(sample(&t, "ponder_sequences", &[gen, &s]).is_some(), "{t}");
    }
    assert!(sample(&t, "ponder_batch_size", &[gen]).is_some(), "{t}");
    assert_eq!(
        sample(&t, "ponder_first_event_seconds_count", &[]),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(
            &t,
            "ponder_partial_answers_total",
            &["strategy=\"self_consistency\""]
        ),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, "ponder_members", &[gen, "state=\"ready\""]),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(
            &t,
            "ponder_members",
            &["role=\"verifier\"", "state=\"ready\""]
        ),
        Some(1.0),
        "{t}"
    );
    // Once the queries are done, nothing runs or waits and the batch is empty.
    assert!(
        eventually(Duration::from_secs(5), || {
            let t = text();
            sample(&t, "ponder_sequences", &[gen, "state=\"running\""]) == Some(0.0)
                && sample(&t, "ponder_batch_size", &[gen]) == Some(0.0)
        })
        .await,
        "{}",
        text()
    );
    cluster.stop().await;
}
