//! Network partitions without stopping anything (hardening issue, item 5), made with a
//! proxy that at some moment stops passing bytes in either direction while keeping every
//! connection open (a black hole, as a cut cable or a dropped route looks from both
//! ends; no RST, no FIN):
//! - a generator stays alive and keeps its etcd lease, but the orchestrator can no
//!   longer reach it (its address in etcd is the proxy): queries keep being answered by
//!   the other generator, without waiting for the query deadline;
//! - the orchestrator is cut off from etcd but not from the workers: it keeps the
//!   membership it knows and keeps answering;
//! - once the orchestrator knows how long calls take, a query whose call goes to a
//!   cut-off generator is answered by a hedged copy on the other one, well before the
//!   keep-alive declares the connection dead.

use crate::common::*;
use ponder_cluster::node::NodeArgs;
use ponder_cluster::Role;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to `target` that can be switched into a black hole.
struct BlackHoleProxy {
    addr: String,
    target: Arc<Mutex<Option<String>>>,
    cut: Arc<AtomicBool>,
}

impl BlackHoleProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let target: Arc<Mutex<Option<String>>> = Arc::default();
        let cut = Arc::new(AtomicBool::new(false));
        let (t, c) = (target.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Some(to) = t.lock().unwrap().clone() else {
                    continue; // not wired yet: drop the connection
                };
                let Ok(outbound) = TcpStream::connect(to).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pipe(ri, wo, c.clone()));
                tokio::spawn(pipe(ro, wi, c.clone()));
            }
        });
        Self { addr, target, cut }
    }
}

/// Copies bytes until `cut` is set; from then on reads and drops them, holding both
/// sockets open.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if cut.load(Ordering::SeqCst) {
                    // Keep the other side open: a black hole never closes.
                    std::future::pending::<()>().await;
                }
                return;
            }
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// etcd, a generator behind a black-hole proxy (etcd gets the proxy's address), another
/// generator, a verifier, and an orchestrator that sees them all ready.
struct CutCluster {
    _etcd: Etcd,
    _nodes: Vec<Proc>,
    proxy: BlackHoleProxy,
    orchestrator: ponder_orchestrator::OrchestratorNode,
    metrics: ponder_cluster::metrics::Metrics,
}

impl CutCluster {
    async fn start(cluster: &str) -> Self {
        let etcd = Etcd::start();
        let url = etcd.client_url.clone();
        let (gen, prm) = (generator_model(), verifier_model());
        let proxy = BlackHoleProxy::start().await;
        let (cut_gen, cut_addr) = spawn_etcd_node(
            "generator",
            &gen,
            &url,
            cluster,
            &["--advertise", &proxy.addr],
        );
        *proxy.target.lock().unwrap() = Some(cut_addr);
        let (other_gen, _) = spawn_etcd_node("generator", &gen, &url, cluster, &[]);
        let (v, _) = spawn_etcd_node("verifier", &prm, &url, cluster, &[]);
        let metrics = ponder_cluster::metrics::Metrics::new();
        let orchestrator = ponder_orchestrator::start(
            ponder_orchestrator::OrchestratorArgs::new(NodeArgs {
                etcd: vec![url.clone()],
                cluster: cluster.into(),
                ..NodeArgs::default()
            }),
            metrics.clone(),
        )
        .await
        .unwrap();
        let reg = orchestrator.registry.clone();
        assert!(
            eventually(Duration::from_secs(15), || reg.ready(Role::Generator) == 2
                && reg.ready(Role::Verifier) == 1)
            .await,
            "both generators and the verifier are ready"
        );
        Self {
            _etcd: etcd,
            _nodes: vec![cut_gen, other_gen, v],
            proxy,
            orchestrator,
            metrics,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_cut_off_but_registered_fails_no_query() {
    let CutCluster {
        _etcd,
        _nodes,
        proxy,
        orchestrator: o,
        ..
    } = CutCluster::start("cut").await;
    let reg = o.registry.clone();
    // Queries one after another; the cable is cut a second in, with calls in flight.
    let addr = o.node.addr;
    let cut = proxy.cut.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cut.store(true, Ordering::SeqCst);
    });
    let mut c = client(addr).await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(12) {
        let q = ["47+38", "85*3-19", "12*(7+6)", "(47+38)*3-19"][i as usize % 4];
        let t = Instant::now();
        let r = c.solve(request(q, 4, i)).await;
        slowest = slowest.max(t.elapsed());
        assert!(r.is_ok(), "query {i} failed after the partition: {r:?}");
        i += 1;
    }
    assert!(i >= 5, "only {i} queries in 12 s");
    assert!(
        slowest < Duration::from_secs(9),
        "a query waited {slowest:?}: calls to the cut-off member should fail within ~4 s"
    );
    // The cut-off member is still registered (its lease is held) but ejected.
    assert_eq!(reg.members(Role::Generator).len(), 2);
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_generator_costs_a_query_a_hedge_not_the_keep_alive() {
    let CutCluster {
        _etcd,
        _nodes,
        proxy,
        orchestrator: o,
        metrics,
    } = CutCluster::start("hedge").await;
    let addr = o.node.addr;
    let questions = ["47+38", "85*3-19", "12*(7+6)", "(47+38)*3-19"];
    // Enough answered calls for the orchestrator to know how long a call takes.
    let warm = futures::future::join_all((0..4u64).map(|w| async move {
        let mut c = client(addr).await;
        for i in 0..12u64 {
            let seed = w * 100 + i;
            c.solve(request(questions[seed as usize % 4], 4, seed))
                .await
                .unwrap();
        }
    }));
    warm.await;
    // Cut the cable, then ask one query after another: those whose calls go to the
    // cut-off member are answered by the hedge, long before the keep-alive gives up.
    proxy.cut.store(true, Ordering::SeqCst);
    let mut c = client(addr).await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut i = 1000u64;
    while started.elapsed() < Duration::from_secs(6) {
        let t = Instant::now();
        let r = c.solve(request(questions[i as usize % 4], 4, i)).await;
        slowest = slowest.max(t.elapsed());
        assert!(r.is_ok(), "query {i} failed after the partition: {r:?}");
        i += 1;
    }
    let won = metrics
        .hedges
        .get_or_create(&ponder_cluster::metrics::Metrics::labels(&[
            ("role", "generator"),
            ("result", "won"),
        ]))
        .get();
    eprintln!(
        "after the cut: {} queries, the slowest {slowest:?}; hedges won: {won}",
        i - 1000
    );
    assert!(won >= 1, "no hedge answered for the cut-off member");
    assert!(
        slowest < Duration::from_millis(2500),
        "a query waited {slowest:?}: a hedge should answer well before the keep-alive (~4 s)"
    );
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_cut_off_from_etcd_keeps_answering() {
    let etcd = Etcd::start();
    let url = etcd.client_url.clone();
    let proxy = BlackHoleProxy::start().await;
    *proxy.target.lock().unwrap() = Some(url.trim_start_matches("http://").to_string());
    let (gen, prm) = (generator_model(), verifier_model());
    let (_g, _) = spawn_etcd_node("generator", &gen, &url, "cut-etcd", &[]);
    let (_v, _) = spawn_etcd_node("verifier", &prm, &url, "cut-etcd", &[]);
    // The orchestrator reaches etcd only through the proxy.
    let o = ponder_orchestrator::start(
        ponder_orchestrator::OrchestratorArgs::new(NodeArgs {
            etcd: vec![format!("http://{}", proxy.addr)],
            cluster: "cut-etcd".into(),
            ..NodeArgs::default()
        }),
        Default::default(),
    )
    .await
    .unwrap();
    let reg = o.registry.clone();
    assert!(
        eventually(Duration::from_secs(15), || reg.ready(Role::Generator) == 1
            && reg.ready(Role::Verifier) == 1)
        .await
    );
    proxy.cut.store(true, Ordering::SeqCst);
    let mut c = client(o.node.addr).await;
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(8) {
        let r = c.solve(request("85*3-19", 4, i)).await;
        assert!(r.is_ok(), "query {i} failed with etcd cut off: {r:?}");
        i += 1;
    }
    assert!(i >= 5, "only {i} queries in 8 s");
    assert_eq!(reg.ready(Role::Generator), 1, "the known members are kept");
    o.stop().await;
}
