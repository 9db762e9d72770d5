//! The verifier node: `ponder.v1.Verifier` (per-step PRM rewards) over one model worker.
//!
//! Requests from many queries are batched by the engine's worker loop; this service
//! only translates (`ponder_cluster::wire`) and validates.

use clap::Parser;
use ponder_cluster::metrics::Metrics;
use ponder_cluster::node::NodeArgs;
use ponder_cluster::BoxedFuture;
use ponder_cluster::{wire, Role};
use ponder_proto::v1 as pb;
use ponder_proto::v1::verifier_server::{Verifier, VerifierServer};
use ponder_search::Score;
use ponder_worker::node::{ModelArgs, ModelNode, WorkerCell};
use ponder_worker::rpc;
use tonic::{Request, Response, Status};

pub const SERVICE_NAME: &str = "ponder.v1.Verifier";

#[derive(Debug, Clone, Parser)]
#[command(name = "ponder-verifier", version, about = "Serve ponder.v1.Verifier")]
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
        let answer = rpc::serve(
            &self.metrics,
            Role::Verifier,
            "Score",
            request,
            |msg, meta| async move {
                let mut req = wire::score_request_from_pb(msg, meta.request_id)?;
                req.tenant = meta.tenant;
                let out = self.worker.get()?.score(req).await?;
                Ok(wire::score_output_to_pb(out))
            },
        )
        .await;
        rpc::with_queue_depth(answer, &self.worker)
    }

    async fn model_info(
        &self,
        _request: Request<pb::ModelInfoRequest>,
    ) -> Result<Response<pb::ModelInfoResponse>, Status> {
        rpc::model_info(&self.worker)
    }
}

/// Starts a verifier node and returns once its PRM is loaded and it is SERVING.
pub fn start(
    args: VerifierArgs,
    metrics: Metrics,
) -> BoxedFuture<'static, anyhow::Result<ModelNode>> {
    Box::pin(async move {
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
    })
}

/// The `ponder-verifier` binary: serve until SIGTERM/Ctrl-C, then stop gracefully.
pub fn run(args: VerifierArgs) -> BoxedFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        let metrics = Metrics::for_binary(&args.node, "verifier").await?;
        start(args, metrics).await?.serve_until_shutdown().await
    })
}
