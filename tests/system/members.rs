//! A rogue member (finding H1): a Generator that registers itself in etcd and answers
//! ModelInfo with poisonous limits (`context_length: 1`) must not shrink the honest
//! generators' queries, must never be sent a prompt, and is counted as refused.

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
    info: pb::ModelInfoResponse,
    prompts: Arc<Mutex<Vec<String>>>,
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
        Ok(Response::new(self.info.clone()))
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

async fn serve_rogue(rogue: Rogue) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
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
    let node = |model: &std::path::PathBuf| {
        vec![
            "--model".to_string(),
            model.to_str().unwrap().to_string(),
            "--etcd".into(),
            url.clone(),
            "--cluster".into(),
            "h1".into(),
        ]
    };
    let gen_args = node(&gen);
    let prm_args = node(&prm);
    let (_g, _) = spawn_node("generator", &as_strs(&gen_args));
    let (_v, _) = spawn_node("verifier", &as_strs(&prm_args));
    let rogue = Rogue {
        info: pb::ModelInfoResponse {
            model_id: "arith-gen".into(),
            context_length: 1,
            max_token_bytes: 1,
            vocab_size: 101,
            parameters: 1,
            instance_id: "rogue".into(),
            ..Default::default()
        },
        prompts: Arc::default(),
    };
    let rogue_addr = serve_rogue(rogue.clone()).await;
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
