//! Network partitions without stopping anything (hardening issue, item 5), made with a
//! proxy that at some moment stops passing bytes in either direction while keeping every
//! connection open (a black hole, as a cut cable or a dropped route looks from both
//! ends; no RST, no FIN):
//! - a generator stays alive and keeps its etcd lease, but the orchestrator can no
//!   longer reach it (its address in etcd is the proxy): queries keep being answered by
//!   the other generator, without waiting for the query deadline;
//! - the orchestrator is cut off from etcd but not from the workers: it keeps the
//!   membership it knows and keeps answering.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_cut_off_but_registered_fails_no_query() {
    let etcd = Etcd::start();
    let url = etcd.client_url.clone();
    let (gen, prm) = (generator_model(), verifier_model());
    let proxy = BlackHoleProxy::start().await;
    // The one behind the proxy: etcd gets the proxy's address.
    let (_cut_gen, cut_addr) = spawn_etcd_node(
        "generator",
        &gen,
        &url,
        "cut",
        &["--advertise", &proxy.addr],
    );
    *proxy.target.lock().unwrap() = Some(cut_addr);
    let (_other_gen, _) = spawn_etcd_node("generator", &gen, &url, "cut", &[]);
    let (_v, _) = spawn_etcd_node("verifier", &prm, &url, "cut", &[]);
    let o = ponder_orchestrator::start(
        ponder_orchestrator::OrchestratorArgs::new(NodeArgs {
            etcd: vec![url.clone()],
            cluster: "cut".into(),
            ..NodeArgs::default()
        }),
        Default::default(),
    )
    .await
    .unwrap();
    let reg = o.registry.clone();
    assert!(
        eventually(Duration::from_secs(15), || reg.ready(Role::Generator) == 2
            && reg.ready(Role::Verifier) == 1)
        .await,
        "both generators and the verifier are ready"
    );
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
