//! A rogue member (finding H1): a Generator that registers itself in etcd and answers
//! ModelInfo with poisonous limits (`context_length: 1`) must not shrink the honest
//! generators' queries, must never be sent a prompt, and is counted as refused. With a
//! cluster CA, a rogue whose ModelInfo is exactly an honest member's is refused too: it
//! has no certificate the CA signed, so the orchestrator never even asks it.

use crate::common::*;
use ponder_cluster::discovery::EtcdConfig;
use ponder_cluster::node::NodeArgs;
use ponder_cluster::register::Registration;
use ponder_cluster::{MemberRecord, Role};
use ponder_proto::v1 as pb;
use ponder_proto::v1::generator_server::{Generator, GeneratorServer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// A Generator of our own that says what it is told to in ModelInfo, answers "42" to
/// everything, and keeps every prompt it is sent.
#[derive(Clone)]
struct Rogue {
    info: Arc<Mutex<pb::ModelInfoResponse>>,
    prompts: Arc<Mutex<Vec<String>>>,
    /// ModelInfo calls answered.
    asked: Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl Generator for Rogue {
    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let req = request.into_inner();
        self.prompts.lock().unwrap().push(req.prompt.clone());
        let completions = (0..req.n.max(1))
            .map(|index| pb::Completion {
                index,
                text: "Answer: 42".into(),
                tokens: 3,
                finish_reason: pb::FinishReason::Eos as i32,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::GenerateResponse {
            completions,
            ..Default::default()
        }))
    }

    async fn model_info(
        &self,
        _: Request<pb::ModelInfoRequest>,
    ) -> Result<Response<pb::ModelInfoResponse>, Status> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Response::new(self.info.lock().unwrap().clone()))
    }
}

/// Serves `rogue` on an ephemeral port, over TLS with `identity` when given.
async fn serve_rogue(rogue: Rogue, identity: Option<tonic::transport::Identity>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = tonic::transport::Server::builder();
    if let Some(identity) = identity {
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap();
    }
    tokio::spawn(
        server
            .add_service(GeneratorServer::new(rogue))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_member_with_poisonous_limits_is_refused_and_sees_no_prompt() {
    let etcd = Etcd::start();
    let url = etcd.client_url.clone();
    let (gen, prm) = (generator_model(), verifier_model());
    let (_g, _) = spawn_etcd_node("generator", &gen, &url, "h1", &[]);
    let (_v, _) = spawn_etcd_node("verifier", &prm, &url, "h1", &[]);
    let rogue = Rogue {
        info: Arc::new(Mutex::new(pb::ModelInfoResponse {
            // The honest generator's model, so that the rogue competes for its calls.
            model_id: generator_model_id(),
            context_length: 1,
            max_token_bytes: 1,
            vocab_size: 101,
            parameters: 1,
            instance_id: "rogue".into(),
            ..Default::default()
        })),
        prompts: Arc::default(),
        asked: Arc::default(),
    };
    let rogue_addr = serve_rogue(rogue.clone(), None).await;
    // One `etcdctl put` with no credentials: the default install's etcd takes it.
    let _registration = Registration::start(
        EtcdConfig::plain(vec![url.clone()]),
        "h1".into(),
        MemberRecord {
            role: Role::Generator,
            instance_id: "rogue".into(),
            address: rogue_addr,
            model_id: String::new(),
            capacity: 0,
        },
        5,
    );
    let metrics = ponder_cluster::metrics::Metrics::new();
    let o = ponder_orchestrator::start(
        ponder_orchestrator::OrchestratorArgs::new(NodeArgs {
            etcd: vec![url.clone()],
            cluster: "h1".into(),
            ..NodeArgs::default()
        }),
        metrics.clone(),
    )
    .await
    .unwrap();
    let reg = o.registry.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            reg.members(Role::Generator).len() == 2 && reg.ready(Role::Verifier) == 1
        })
        .await,
        "the rogue and the honest generator are both members"
    );
    assert!(
        eventually(Duration::from_secs(5), || metrics.render().contains(
            r#"ponder_refusals_total{what="member",reason="limits"} 1"#
        ))
        .await,
        "the refusal is counted: {}",
        metrics.render()
    );
    assert_eq!(
        reg.ready(Role::Generator),
        1,
        "only the honest one is routable"
    );
    let mut c = client(o.node.addr).await;
    for (i, q) in ["47+38", "85*3-19", "12*(7+6)"].into_iter().enumerate() {
        let r = c.solve(request(q, 4, i as u64)).await.unwrap().into_inner();
        assert!(
            r.solution.lines().count() >= 2,
            "a whole solution, not one token: {:?}",
            r.solution
        );
        assert_ne!(r.answer, "42");
    }
    assert!(
        rogue.prompts.lock().unwrap().is_empty(),
        "the rogue saw a prompt"
    );
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cluster_ca_a_rogue_copying_an_honest_model_info_is_never_asked() {
    use crate::common::security::{generator, worker_args, Pki};
    use ponder_cluster::tls::TlsArgs;
    const WORKER_NAME: &str = "ponder-worker";
    let pki = Pki::new("h1-tls");
    let gen_cert = pki.issue("generator", &[WORKER_NAME]);
    let orch_client = pki.issue("orchestrator-client", &["ponder-orchestrator"]);
    let honest = generator(worker_args(&pki, &gen_cert)).await;
    // The rogue: a certificate for the same name from a CA of its own, and the honest
    // generator's ModelInfo to the letter (filled in once the orchestrator has it).
    let own_ca = Pki::new("h1-rogue");
    let rogue_cert = own_ca.issue("rogue", &[WORKER_NAME]);
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(&rogue_cert.cert).unwrap(),
        std::fs::read(&rogue_cert.key).unwrap(),
    );
    let rogue = Rogue {
        info: Arc::default(),
        prompts: Arc::default(),
        asked: Arc::default(),
    };
    let rogue_addr = serve_rogue(rogue.clone(), Some(identity)).await;
    let mut args = ponder_orchestrator::OrchestratorArgs::new(NodeArgs {
        tls: TlsArgs {
            tls_ca: Some(pki.ca()),
            tls_client_cert: Some(orch_client.cert.clone()),
            tls_client_key: Some(orch_client.key.clone()),
            tls_server_name: Some(WORKER_NAME.into()),
            ..TlsArgs::default()
        },
        drain_secs: 1,
        ..NodeArgs::default()
    });
    args.generators = vec![honest.node.addr.to_string(), rogue_addr];
    let o = ponder_orchestrator::start(args, Default::default())
        .await
        .unwrap();
    let honest_info = o
        .registry
        .members(Role::Generator)
        .iter()
        .find_map(|m| m.info.get().cloned())
        .expect("the honest generator is ready");
    *rogue.info.lock().unwrap() = honest_info;
    let mut c = client(o.node.addr).await;
    for i in 0..3u64 {
        let r = c.solve(request("47+38", 4, i)).await.unwrap().into_inner();
        assert!(!r.solution.is_empty());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        o.registry.ready(Role::Generator),
        1,
        "only the honest one is ready"
    );
    assert_eq!(
        rogue.asked.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the TLS handshake fails before any RPC reaches the rogue"
    );
    assert!(
        rogue.prompts.lock().unwrap().is_empty(),
        "the rogue saw a prompt"
    );
    o.stop().await;
    honest.stop().await;
}
