//! The generator node: `ponder.v1.Generator` over one model worker.
//!
//! The service only translates: validation, batching, sampling and KV reuse are the
//! engine's; the conversions are `ponder_cluster::wire`'s and `ponder_worker::convert`'s;
//! lifecycle, health and registration are `ponder_worker::node`'s.

use clap::Parser;
use ponder_cluster::metrics::Metrics;
use ponder_cluster::node::NodeArgs;
use ponder_cluster::BoxedFuture;
use ponder_cluster::{wire, Role};
use ponder_proto::v1 as pb;
use ponder_proto::v1::generator_server::{Generator, GeneratorServer};
use ponder_search::Generate;
use ponder_worker::node::{ModelArgs, ModelNode, WorkerCell};
use ponder_worker::rpc;
use tonic::{Request, Response, Status};

pub const SERVICE_NAME: &str = "ponder.v1.Generator";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ponder-generator",
    version,
    about = "Serve ponder.v1.Generator"
)]
pub struct GeneratorArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub struct GeneratorService {
    worker: WorkerCell,
    metrics: Metrics,
}

#[tonic::async_trait]
impl Generator for GeneratorService {
    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let answer = rpc::serve(
            &self.metrics,
            Role::Generator,
            "Generate",
            request,
            |msg, meta| async move {
                let mut req = wire::gen_request_from_pb(msg, meta.request_id)?;
                req.tenant = meta.tenant;
                let out = self.worker.get()?.generate(req).await?;
                Ok(wire::gen_output_to_pb(out))
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

/// Starts a generator node and returns once its model is loaded and it is SERVING.
pub fn start(
    args: GeneratorArgs,
    metrics: Metrics,
) -> BoxedFuture<'static, anyhow::Result<ModelNode>> {
    Box::pin(async move {
        let cell = WorkerCell::default();
        let service = GeneratorService {
            worker: cell.clone(),
            metrics: metrics.clone(),
        };
        let routes = tonic::service::Routes::new(GeneratorServer::new(service));
        ModelNode::start(
            args.node,
            args.model,
            Role::Generator,
            SERVICE_NAME,
            cell,
            routes,
            metrics,
        )
        .await
    })
}

/// The `ponder-generator` binary: serve until SIGTERM/Ctrl-C, then stop gracefully.
pub fn run(args: GeneratorArgs) -> BoxedFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        let metrics = Metrics::for_binary(&args.node, "generator").await?;
        start(args, metrics).await?.serve_until_shutdown().await
    })
}
