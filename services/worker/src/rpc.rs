//! What every worker RPC does around its handler, written once for both roles.
//!
//! Each call gets the request id from its metadata (or a fresh one), a tracing span
//! attached to the handler's future (never entered across an `.await`) and continuing
//! the caller's trace (`traceparent`, [`ponder_cluster::trace`]), an info log line for
//! the calls of one query in [`LOG_ONE_IN`], a latency
//! observation labelled with its gRPC code, and the one error map
//! (`SearchError` -> `Status`, `ponder_cluster::status`).

use crate::node::WorkerCell;
use ponder_cluster::metrics::{code_of, Metrics};
use ponder_cluster::status::to_status;
use ponder_cluster::{request_id, Role};
use ponder_proto::v1 as pb;
use ponder_search::Result;
use std::future::Future;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Who a call is for: its request id (for logs) and tenant (for the fair queue).
pub struct CallMeta {
    pub request_id: String,
    pub tenant: u64,
}

/// Runs `handler(message, meta)` as RPC `method` of a `role` node.
pub async fn serve<T, R, Fut>(
    metrics: &Metrics,
    role: Role,
    method: &'static str,
    request: Request<T>,
    handler: impl FnOnce(T, CallMeta) -> Fut,
) -> Result<Response<R>, Status>
where
    Fut: Future<Output = Result<R>>,
{
    let timer = metrics.start(role.as_str(), method);
    let id = request_id::from_metadata(request.metadata());
    let tenant = ponder_cluster::tenant::from_metadata(request.metadata());
    let span = tracing::info_span!("rpc", role = role.as_str(), method, request_id = %id);
    ponder_cluster::trace::continue_from(&span, request.metadata());
    let logged_id = logged(&id).then(|| id.clone());
    let started = std::time::Instant::now();
    let meta = CallMeta {
        request_id: id,
        tenant,
    };
    let result = handler(request.into_inner(), meta)
        .instrument(span)
        .await
        .map(Response::new)
        .map_err(to_status);
    let code = code_of(&result);
    if let Some(request_id) = logged_id {
        tracing::info!(
            target: "ponder::calls",
            role = role.as_str(),
            method,
            request_id,
            code = ponder_cluster::metrics::code_name(code),
            latency_ms = started.elapsed().as_millis() as u64,
            "call"
        );
    }
    timer.finish(code);
    result
}

/// Adds the node's queue depth (requests accepted and not yet answered) to a
/// successful answer's metadata, where orchestrators read it as this node's load
/// (docs/load-adaptive.md). A node whose worker is not loaded adds nothing.
pub fn with_queue_depth<R>(
    result: Result<Response<R>, Status>,
    cell: &WorkerCell,
) -> Result<Response<R>, Status> {
    result.map(|mut resp| {
        if let Ok(worker) = cell.get() {
            resp.metadata_mut().insert(
                ponder_cluster::member::QUEUE_DEPTH_HEADER,
                worker.queue_depth().into(),
            );
        }
        resp
    })
}

/// One query in [`LOG_ONE_IN`] has every call it makes logged at info (by a hash of its
/// request id, so a logged query's calls are all there on every node): enough to
/// follow a query across nodes, never a line per call under load.
pub const LOG_ONE_IN: u64 = 16;

fn logged(request_id: &str) -> bool {
    ponder_search::solve::hash(request_id).is_multiple_of(LOG_ONE_IN)
}

/// The ModelInfo answer of a worker node: the wire form of the engine's model facts.
pub fn model_info(cell: &WorkerCell) -> Result<Response<pb::ModelInfoResponse>, Status> {
    let backend = cell.get().map_err(to_status)?;
    Ok(Response::new(backend.model_info(cell.instance_id())))
}
