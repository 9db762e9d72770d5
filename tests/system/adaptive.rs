//! Load-adaptive budgets end to end on the embedded cluster (docs/load-adaptive.md),
//! under the load law and under the capacity law: an idle cluster grants the maximum,
//! an open-loop burst makes the controller cut the budgets of the queries it runs (none
//! fails), and once the burst is over the grants are back at the maximum. A fixed-mode
//! query in the burst keeps its budget.

use crate::common;
use ponder_cli::embedded::EmbeddedCluster;
use ponder_proto::v1 as pb;
use std::time::{Duration, Instant};

const QUESTIONS: [&str; 6] = [
    "47+38",
    "(12+7)*3",
    "91-45+8",
    "(60-18)*2-5",
    "8*(7+6)",
    "99-(23+41)",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_shrink_under_a_burst_and_grow_back_after_it() {
    // The default control: one query alone is at load 0.25 (four per generator node are
    // load 1), so it gets its maximum; a burst of 25 is far past the top of the range.
    let cfg = common::embedded_config(1);
    assert_eq!(cfg.control.budget_mode, ponder_search::BudgetMode::Adaptive);
    burst_then_recover(cfg, &["ponder_budget_load_signal{signal=\"queries\"}"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_capacity_law_too() {
    // 48 generations per second on the one generator node: a query alone (16 in 5 s)
    // fits, 25 at once (24 per second at 16 each) are far past it. After the burst its
    // arrivals leave the 5 s window, and one query every half second or more (at most
    // 32 per second) fits again.
    let mut cfg = common::embedded_config(1);
    cfg.control.capacity = 48.0;
    burst_then_recover(
        cfg,
        &["ponder_budget_capacity_share ", "ponder_budget_demand "],
    )
    .await;
}

/// An idle query, a burst of 24 adaptive queries and one fixed at once, then one at a
/// time until the grant is the maximum again; `series` must be in /metrics.
async fn burst_then_recover(cfg: ponder_cli::embedded::EmbeddedConfig, series: &[&str]) {
    let cluster = EmbeddedCluster::start(cfg)
        .await
        .expect("the cluster starts");
    let addr = cluster.addr();
    let mut c = common::client(addr).await;

    let idle = c
        .solve(common::request(QUESTIONS[0], 16, 1))
        .await
        .expect("an idle query")
        .into_inner();
    assert_eq!(
        (
            idle.budget_granted,
            idle.budget_reason.as_str(),
            idle.budget_mode
        ),
        (16, "idle", pb::BudgetMode::Adaptive as i32),
        "an idle cluster grants the maximum"
    );

    // The burst: 24 adaptive queries at once, and one fixed. Hot, so that their samples
    // part at once: at the default temperature most samples are twins (docs/engine.md),
    // and the burst could be over before the controller's smoothed load (read every
    // 250 ms) has risen.
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..25u64 {
        let mut c = c.clone();
        let mut req = common::request(QUESTIONS[i as usize % QUESTIONS.len()], 16, 100 + i);
        req.temperature = 2.0;
        if i == 24 {
            req.budget_mode = pb::BudgetMode::Fixed as i32;
        }
        burst.spawn(async move { c.solve(req).await.map(|r| r.into_inner()) });
    }
    let mut adaptive = Vec::new();
    while let Some(r) = burst.join_next().await {
        let r = r.unwrap().expect("no query of the burst fails");
        assert!((1..=16).contains(&r.budget_granted), "{r:?}");
        if r.budget_mode == pb::BudgetMode::Fixed as i32 {
            assert_eq!((r.budget_granted, r.budget_reason.as_str()), (16, "fixed"));
        } else {
            adaptive.push((r.budget_granted, r.budget_reason));
        }
    }
    assert_eq!(adaptive.len(), 24);
    let cut = adaptive.iter().filter(|(g, _)| *g < 16).count();
    assert!(
        cut >= 6,
        "the burst cut at least a quarter of the grants: {adaptive:?}"
    );
    assert!(adaptive
        .iter()
        .filter(|(g, _)| *g < 16)
        .all(|(_, why)| why == "load" || why == "floor"));

    // After it, the load decays within seconds and grants are back at the maximum.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seed = 1000;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        seed += 1;
        let r = c
            .solve(common::request(QUESTIONS[1], 16, seed))
            .await
            .expect("a query after the burst")
            .into_inner();
        if (r.budget_granted, r.budget_reason.as_str()) == (16, "idle") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grants still cut 20 s after the burst: {r:?}"
        );
    }
    let metrics = cluster.metrics.render();
    for series in [
        "ponder_budget_granted_generations_count{reason=\"idle\"}",
        "ponder_budget_requested_generations_count",
        "ponder_budget_load ",
    ]
    .iter()
    .chain(series)
    {
        assert!(metrics.contains(series), "{series} missing from /metrics");
    }
    assert!(
        metrics.contains("ponder_budget_grants_total{reason=\"load\"}")
            || metrics.contains("ponder_budget_grants_total{reason=\"floor\"}"),
        "cut grants are counted by reason"
    );
    cluster.stop().await;
}
