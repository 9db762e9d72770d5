//! Discovery through a real etcd: members appear and leave (orchestrators register
//! too), a SIGKILLed node vanishes when its lease expires, and the orchestrator keeps
//! serving while etcd restarts.

use crate::common::*;
use ponder_cluster::node::NodeArgs;
use ponder_cluster::Role;
use ponder_worker::node::ModelArgs;
use std::time::Duration;

fn node_args(etcd: &Etcd) -> NodeArgs {
    NodeArgs {
        etcd: vec![etcd.client_url.clone()],
        cluster: "disco".into(),
        lease_ttl: 2,
        drain_secs: 2,
        ..NodeArgs::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_come_and_go_and_etcd_may_restart() {
    let mut etcd = Etcd::start();
    let metrics = ponder_cluster::metrics::Metrics::new();
    let g1 = start_generator(&etcd, &metrics).await;
    let o = ponder_orchestrator::start(
        ponder_orchestrator::OrchestratorArgs::new(node_args(&etcd)),
        metrics.clone(),
    )
    .await
    .unwrap();
    let reg = o.registry.clone();
    assert_eq!(reg.ready(Role::Generator), 1);
    // The orchestrator registers itself too (never routed to; the capacity law counts
    // the replicas that share the generators), and is never taken for a model node.
    assert!(
        eventually(Duration::from_secs(5), || reg
            .members(Role::Orchestrator)
            .len()
            == 1)
        .await,
        "the orchestrator did not register under its role"
    );
    assert_eq!(reg.ready(Role::Orchestrator), 0);
    let watch_up =
        || crate::metrics::sample(&metrics.render(), "ponder_etcd_watch_up", &[]).unwrap_or(-1.0);
    assert_eq!(watch_up(), 1.0);

    // A verifier joins: it appears.
    let v = ponder_verifier::start(
        ponder_verifier::VerifierArgs {
            node: node_args(&etcd),
            model: ModelArgs::new(verifier_model()),
        },
        metrics.clone(),
    )
    .await
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || reg.ready(Role::Verifier) == 1).await);

    // A generator in another process, then SIGKILLed: gone after its lease (2 s) expires.
    let url = etcd.client_url.clone();
    let gen = generator_model();
    let (mut killed, _) = spawn_etcd_node("generator", &gen, &url, "disco", &["--lease-ttl", "2"]);
    assert!(eventually(Duration::from_secs(5), || reg.ready(Role::Generator) == 2).await);
    killed.0.kill().unwrap();
    assert!(
        eventually(Duration::from_secs(8), || reg
            .members(Role::Generator)
            .len()
            == 1)
        .await,
        "the killed generator is still a member after its lease TTL"
    );

    // A graceful stop revokes the lease: the verifier leaves at once.
    v.stop().await;
    assert!(
        eventually(Duration::from_secs(2), || reg
            .members(Role::Verifier)
            .is_empty())
        .await
    );

    // etcd goes down: the orchestrator keeps its membership and keeps answering.
    etcd.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = client(o.node.addr).await;
    let r = c
        .solve(request("47+38", 4, 1))
        .await
        .expect("solve while etcd is down");
    assert_eq!(r.into_inner().usage.unwrap().generations, 4);
    assert_eq!(reg.members(Role::Generator).len(), 1);
    assert!(
        eventually(Duration::from_secs(5), || watch_up() == 0.0).await,
        "ponder_etcd_watch_up stayed {} with etcd down",
        watch_up()
    );

    // etcd comes back: the watch resyncs and a new node is seen.
    etcd.restart();
    let g3 = start_generator(&etcd, &metrics).await;
    assert!(
        eventually(Duration::from_secs(15), || reg.ready(Role::Generator) == 2).await,
        "a node registered after etcd restarted was not discovered"
    );
    assert_eq!(watch_up(), 1.0);
    assert!(c.solve(request("47+38", 4, 2)).await.is_ok());

    // Every generator leaves: the orchestrator turns NOT_SERVING (a query could only
    // fail), and SERVING again once a generator is back.
    assert_eq!(orchestrator_health(o.node.addr).await, SERVING);
    g3.stop().await;
    g1.stop().await;
    let status = health_within_5s(o.node.addr, NOT_SERVING).await;
    assert_eq!(status, NOT_SERVING, "still SERVING with no generator");
    let g4 = start_generator(&etcd, &metrics).await;
    assert!(reg
        .wait_for(
            Some(std::time::Instant::now() + Duration::from_secs(10)),
            |s| { (s.ready(Role::Generator) == 1).then_some(()) }
        )
        .await
        .is_some());
    let status = health_within_5s(o.node.addr, SERVING).await;
    assert_eq!(
        status, SERVING,
        "not SERVING again once a generator is back"
    );
    g4.stop().await;
    o.stop().await;
}

/// A generator node registered in `etcd`'s cluster.
async fn start_generator(
    etcd: &Etcd,
    metrics: &ponder_cluster::metrics::Metrics,
) -> ponder_worker::node::ModelNode {
    ponder_generator::start(
        ponder_generator::GeneratorArgs {
            node: node_args(etcd),
            model: ModelArgs::new(generator_model()),
        },
        metrics.clone(),
    )
    .await
    .unwrap()
}

/// The orchestrator's health once it reads `want`, or its last reading after 5 s.
async fn health_within_5s(addr: std::net::SocketAddr, want: i32) -> i32 {
    let mut status = 0;
    for _ in 0..50 {
        status = orchestrator_health(addr).await;
        if status == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

async fn orchestrator_health(addr: std::net::SocketAddr) -> i32 {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: "ponder.v1.Orchestrator".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}
