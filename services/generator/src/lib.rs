//! The generator node: `ponder.v1.Generator` over one model worker.
//!
//! The service only translates: validation, batching, sampling and KV reuse are the
//! engine's; lifecycle, health and registration are `ponder_cluster::model_node`'s.

use clap::Parser;
use ponder_cluster::metrics::{code_of, Metrics};
use ponder_cluster::model_node::{engine_status, ModelArgs, ModelNode, WorkerCell};
use ponder_cluster::node::NodeArgs;
use ponder_cluster::{request_id, Role};
use ponder_engine::{FinishReason, SamplingParams};
use ponder_proto::v1 as pb;
use ponder_proto::v1::generator_server::{Generator, GeneratorServer};
use tonic::{Request, Response, Status};

pub const SERVICE_NAME: &str = "ponder.v1.Generator";

#[derive(Debug, Clone, Parser)]
#[command(name = "ponder-generator", about = "Serve ponder.v1.Generator")]
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

fn finish_reason(r: FinishReason) -> pb::FinishReason {
    match r {
        FinishReason::Stop => pb::FinishReason::Stop,
        FinishReason::Eos => pb::FinishReason::Eos,
        FinishReason::Length => pb::FinishReason::Length,
    }
}

/// Wire sampling parameters to the engine's, with the documented defaults for zeros.
pub fn sampling_params(p: Option<pb::SamplingParams>) -> Result<SamplingParams, Status> {
    let p = p.ok_or_else(|| {
        Status::invalid_argument("params is required (at least params.max_tokens)")
    })?;
    if p.max_tokens == 0 {
        return Err(Status::invalid_argument(
            "params.max_tokens must be at least 1",
        ));
    }
    Ok(SamplingParams {
        temperature: p.temperature,
        top_p: if p.top_p == 0.0 { 1.0 } else { p.top_p },
        top_k: p.top_k as usize,
        max_tokens: p.max_tokens as usize,
        stop: p.stop,
        seed: p.seed,
        ignore_eos: false,
    })
}

#[tonic::async_trait]
impl Generator for GeneratorService {
    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let timer = self.metrics.start("generator", "Generate");
        let id = request_id::from_metadata(request.metadata());
        let span = tracing::debug_span!("generate", request_id = %id);
        let _e = span.enter();
        let result = async {
            let worker = self.worker.get()?;
            let req = request.into_inner();
            let params = sampling_params(req.params)?;
            let out = worker
                .generate(ponder_engine::GenerateRequest {
                    prompt: req.prompt,
                    n: req.n,
                    params,
                })
                .await
                .map_err(engine_status)?;
            Ok(Response::new(pb::GenerateResponse {
                completions: out
                    .completions
                    .into_iter()
                    .map(|c| pb::Completion {
                        index: c.index,
                        text: c.text,
                        tokens: c.tokens,
                        finish_reason: finish_reason(c.finish_reason) as i32,
                        stop: c.stop.unwrap_or_default(),
                        logprob: c.logprob,
                    })
                    .collect(),
                prompt_tokens: out.prompt_tokens,
                cached_prompt_tokens: out.cached_prompt_tokens,
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
        Ok(Response::new(model_info(info, self.worker.instance_id())))
    }
}

/// The wire form of the engine's model facts.
pub fn model_info(info: &ponder_engine::ModelInfo, instance_id: &str) -> pb::ModelInfoResponse {
    pb::ModelInfoResponse {
        model_id: info.id.clone(),
        architecture: info.architecture.clone(),
        format: info.format.clone(),
        dtype: info.dtype.clone(),
        parameters: info.parameters,
        vocab_size: info.vocab_size as u32,
        context_length: info.context_length as u32,
        prm: info.prm.clone().unwrap_or_default(),
        max_token_bytes: info.max_token_bytes as u32,
        instance_id: instance_id.to_string(),
        prm_prompt_overhead: info.prm_cost.map_or(0, |c| c.prompt_overhead),
        prm_step_overhead: info.prm_cost.map_or(0, |c| c.step_overhead),
    }
}

/// Starts a generator node and returns once its model is loaded and it is SERVING.
pub async fn start(args: GeneratorArgs, metrics: Metrics) -> anyhow::Result<ModelNode> {
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
}

/// The `ponder-generator` binary: serve until SIGTERM/Ctrl-C, then stop gracefully.
pub async fn run(args: GeneratorArgs) -> anyhow::Result<()> {
    let metrics = Metrics::for_binary(&args.node).await?;
    start(args, metrics).await?.serve_until_shutdown().await
}
