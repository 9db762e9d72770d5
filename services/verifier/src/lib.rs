//! The verifier node: `ponder.v1.Verifier` (per-step PRM rewards) over one model worker.
//!
//! Requests from many queries are batched by the engine's worker loop; this service
//! only translates and validates.

use clap::Parser;
use ponder_cluster::metrics::{code_of, Metrics};
use ponder_cluster::model_node::{engine_status, ModelArgs, ModelNode, WorkerCell};
use ponder_cluster::node::NodeArgs;
use ponder_cluster::{request_id, Role};
use ponder_proto::v1 as pb;
use ponder_proto::v1::verifier_server::{Verifier, VerifierServer};
use tonic::{Request, Response, Status};

pub const SERVICE_NAME: &str = "ponder.v1.Verifier";

#[derive(Debug, Clone, Parser)]
#[command(name = "ponder-verifier", about = "Serve ponder.v1.Verifier")]
pub struct VerifierArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub struct VerifierService {
    worker: WorkerCell,
    metrics: Metrics,
}

#[tonic::async_trait]
impl Verifier for VerifierService {
    async fn score(
        &self,
        request: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        let timer = self.metrics.start("verifier", "Score");
        let id = request_id::from_metadata(request.metadata());
        let span = tracing::debug_span!("score", request_id = %id);
        let _e = span.enter();
        let result = async {
            let worker = self.worker.get()?;
            let req = request.into_inner();
            if let Some(i) = req.candidates.iter().position(|c| c.steps.is_empty()) {
                return Err(Status::invalid_argument(format!(
                    "candidates[{i}] has no steps; every candidate needs at least one"
                )));
            }
            let out = worker
                .score(ponder_engine::ScoreRequest {
                    question: req.question,
                    candidates: req.candidates.into_iter().map(|c| c.steps).collect(),
                })
                .await
                .map_err(engine_status)?;
            Ok(Response::new(pb::ScoreResponse {
                candidates: out
                    .scores
                    .into_iter()
                    .map(|scores| pb::StepScores { scores })
                    .collect(),
                tokens: out.tokens as u64,
            }))
        }
        .await;
        timer.finish(code_of(&result));
        result
    }

    async fn model_info(
        &self,
        _request: Request<pb::ModelInfoRequest>,
    ) -> Result<Response<pb::ModelInfoResponse>, Status> {
        let info = self.worker.get()?.info();
        Ok(Response::new(ponder_generator::model_info(
            info,
            self.worker.instance_id(),
        )))
    }
}

/// Starts a verifier node and returns once its PRM is loaded and it is SERVING.
pub async fn start(args: VerifierArgs, metrics: Metrics) -> anyhow::Result<ModelNode> {
    let cell = WorkerCell::default();
    let service = VerifierService {
        worker: cell.clone(),
        metrics: metrics.clone(),
    };
    let routes = tonic::service::Routes::new(VerifierServer::new(service));
    ModelNode::start(
        args.node,
        args.model,
        Role::Verifier,
        SERVICE_NAME,
        cell,
        routes,
        metrics,
    )
    .await
}

/// The `ponder-verifier` binary: serve until SIGTERM/Ctrl-C, then stop gracefully.
pub async fn run(args: VerifierArgs) -> anyhow::Result<()> {
    let metrics = Metrics::for_binary(&args.node).await?;
    start(args, metrics).await?.serve_until_shutdown().await
}
