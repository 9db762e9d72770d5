//! The OpenAI-compatible HTTP gateway: `POST /v1/chat/completions`, `POST
//! /v1/completions` (both with server-sent-event streaming) and `GET /v1/models`, on a
//! listener of the orchestrator process (docs/gateway.md).
//!
//! It is not a proxy with rules of its own. An HTTP request becomes the `SolveRequest`
//! and the metadata a gRPC client would send (API key, request id, deadline, the
//! peer's address), passes the same [`Gate`] (address and key rate limits,
//! authentication) and calls the same `Orchestrator` methods in-process. Admission, the
//! per-client generation charge, cancellation, the access log and the RPC metrics are
//! therefore the gRPC path's own, and the two front doors cannot drift apart. A
//! separate proxy process would add a hop and lose the peer's address.
//!
//! A client that goes away cancels its query: hyper drops the handler (and with it the
//! query's task) when the connection closes, and a stream's keep-alive comments find a
//! closed connection within a second even while the search has nothing new to say.

pub mod error;
pub mod listener;
pub mod openai;

use crate::access::Gate;
use crate::service::OrchestratorService;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use error::ApiError;
use futures::StreamExt;
use listener::Peer;
use openai::{Endpoint, Head};
use ponder_proto::v1 as pb;
use ponder_proto::v1::orchestrator_server::Orchestrator;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::transport::server::TcpConnectInfo;

/// The request header that sets a request's deadline, in seconds (gRPC clients send
/// `grpc-timeout`; HTTP has no standard one).
pub const TIMEOUT_HEADER: &str = "x-request-timeout";

/// The largest request body read by default: a question is at most 4 KiB, and chat
/// histories that harnesses send along are rarely more than a few.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// The gateway's flags (the orchestrator's; `ponder up` serves it by default).
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Also serve the OpenAI-compatible HTTP gateway on this address (HTTPS with the
    /// node's --tls-cert when it has one; docs/gateway.md). Unset: no gateway. `ponder
    /// up` serves it on 127.0.0.1:8080.
    #[arg(long, env = "PONDER_GATEWAY_ADDR")]
    pub gateway_addr: Option<SocketAddr>,
    /// The largest request body the gateway reads, in bytes (larger: 413).
    #[arg(long, env = "PONDER_GATEWAY_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub gateway_max_body_bytes: usize,
}

impl Default for GatewayArgs {
    fn default() -> Self {
        Self {
            gateway_addr: None,
            gateway_max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    /// "https" when it serves TLS, else "http".
    pub scheme: &'static str,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Binds `addr` and serves until [`Gateway::stop`]: HTTPS with `tls` (the node's
    /// certificate and key files, reloaded when they change), else plain HTTP.
    pub async fn start(
        args: &GatewayArgs,
        addr: SocketAddr,
        tls: Option<ponder_cluster::tls_server::ServerTlsFiles>,
        service: OrchestratorService,
        gate: Gate,
        metrics: ponder_cluster::metrics::Metrics,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.gateway_max_body_bytes >= 1024,
            "--gateway-max-body-bytes must be at least 1024"
        );
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("--gateway-addr {addr}: {e}"))?;
        let addr = tcp.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = GatewayState {
            service,
            gate,
            metrics,
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/models", get(models))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(args.gateway_max_body_bytes))
            .with_state(state);
        let app = app.into_make_service_with_connect_info::<Peer>();
        let task = match tls {
            Some(files) => {
                let tls = listener::TlsListener::new(tcp, &files)?;
                tokio::spawn(async move {
                    let _ = axum::serve(tls, app).await;
                })
            }
            None => tokio::spawn(async move {
                let _ = axum::serve(listener::PlainListener(tcp), app).await;
            }),
        };
        tracing::info!(%addr, scheme, "HTTP gateway (OpenAI-compatible) listening");
        Ok(Self { addr, scheme, task })
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct GatewayState {
    service: OrchestratorService,
    gate: Gate,
    /// For the refusals the gateway makes itself (a body it cannot read).
    metrics: ponder_cluster::metrics::Metrics,
}

impl GatewayState {
    /// The gRPC request the HTTP one is, past the gate; a refusal is the gate's.
    fn request<T>(
        &self,
        message: T,
        peer: SocketAddr,
        headers: &HeaderMap,
        endpoint: Endpoint,
    ) -> Result<tonic::Request<T>, ApiError> {
        let mut map = headers.clone();
        // The deadline comes from TIMEOUT_HEADER only; nothing else is gRPC's to set.
        let grpc: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("grpc-"))
            .cloned()
            .collect();
        for k in grpc {
            map.remove(k);
        }
        if let Some(v) = headers.get(TIMEOUT_HEADER) {
            let millis = timeout_millis(v).ok_or_else(|| {
                ApiError::bad_request(
                    Some(TIMEOUT_HEADER),
                    format!("{TIMEOUT_HEADER} must be a positive number of seconds"),
                )
            })?;
            map.insert(
                "grpc-timeout",
                HeaderValue::from_str(&format!("{millis}m")).expect("digits are a header value"),
            );
        }
        let metadata = MetadataMap::from_headers(map);
        let mut extensions = tonic::Extensions::new();
        extensions.insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer),
        });
        let gated = self
            .gate
            .clone()
            .call(tonic::Request::from_parts(metadata, extensions, ()))
            .map_err(|s| ApiError::from_status(&s, endpoint))?;
        let (metadata, extensions, ()) = gated.into_parts();
        Ok(tonic::Request::from_parts(metadata, extensions, message))
    }
}

/// A timeout header's seconds as whole milliseconds (at least 1), or None if it is not
/// a positive number of seconds up to a day.
fn timeout_millis(v: &HeaderValue) -> Option<u64> {
    let secs: f64 = v.to_str().ok()?.trim().parse().ok()?;
    (secs > 0.0 && secs <= 86_400.0).then(|| ((secs * 1000.0).ceil() as u64).max(1))
}

async fn chat(
    State(gw): State<GatewayState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    complete(gw, Endpoint::Chat, peer, headers, body).await
}

async fn completions(
    State(gw): State<GatewayState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    complete(gw, Endpoint::Completions, peer, headers, body).await
}

async fn complete(
    gw: GatewayState,
    endpoint: Endpoint,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Refused before any call: counted as the gRPC path counts its invalid requests.
    let refused = |e: ApiError| {
        crate::access::refusal(&gw.metrics, "invalid_argument");
        e.into_response()
    };
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let mut e = ApiError::bad_request(None, rejection.body_text());
            e.status = rejection.status();
            return refused(e);
        }
    };
    let parsed = match openai::parse(endpoint, &body) {
        Ok(p) => p,
        Err(bad) => return refused(ApiError::bad_request(bad.param.as_deref(), bad.message)),
    };
    let model = parsed.request.model_id.clone();
    let request = match gw.request(parsed.request, peer, &headers, endpoint) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if !parsed.stream {
        return match gw.service.solve(request).await {
            Ok(resp) => {
                let r = resp.into_inner();
                let head = Head::new(endpoint, &r.request_id, &model);
                with_request_id(json_response(&head.completion(&r)), &r.request_id)
            }
            Err(s) => ApiError::from_status(&s, endpoint).into_response(),
        };
    }
    let resp = match gw.service.solve_stream(request).await {
        Ok(r) => r,
        Err(s) => return ApiError::from_status(&s, endpoint).into_response(),
    };
    let request_id = resp
        .metadata()
        .get(ponder_cluster::request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let head = Head::new(endpoint, &request_id, &model);
    let include_usage = parsed.include_usage;
    let opening = futures::stream::iter([data(&head.opening())]);
    let events = resp.into_inner().flat_map(move |ev| {
        let out = match ev {
            Ok(pb::SolveEvent {
                r#final: Some(r), ..
            }) => {
                let mut v = vec![data(&head.last(&r))];
                if include_usage {
                    v.push(data(&head.usage_chunk(&r)));
                }
                v
            }
            Ok(ev) => vec![data(&head.progress(&ev))],
            Err(s) => vec![data(&ApiError::from_status(&s, endpoint).body())],
        };
        futures::stream::iter(out)
    });
    let done = futures::stream::iter([Ok(Event::default().data("[DONE]"))]);
    let sse = Sse::new(opening.chain(events).chain(done))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(1)));
    with_request_id(sse.into_response(), &request_id)
}

/// One SSE `data:` event of a JSON value.
fn data(v: &serde_json::Value) -> Result<Event, Infallible> {
    Ok(Event::default().data(v.to_string()))
}

async fn models(
    State(gw): State<GatewayState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    let request = match gw.request(pb::ClusterStatusRequest {}, peer, &headers, Endpoint::Chat) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match gw.service.cluster_status(request).await {
        Ok(s) => json_response(&openai::models(s.get_ref())),
        Err(s) => ApiError::from_status(&s, Endpoint::Chat).into_response(),
    }
}

async fn not_found() -> Response {
    let mut e = ApiError::bad_request(
        None,
        "no such endpoint: the gateway serves POST /v1/chat/completions, POST /v1/completions and GET /v1/models",
    );
    e.status = StatusCode::NOT_FOUND;
    e.kind = "not_found_error";
    e.code = "not_found".into();
    e.into_response()
}

fn json_response(v: &serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn with_request_id(mut r: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut()
            .insert(ponder_cluster::request_id::HEADER, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_positive_seconds() {
        let ms = |s: &str| timeout_millis(&HeaderValue::from_str(s).unwrap());
        assert_eq!(ms("2.5"), Some(2500));
        assert_eq!(ms("0.0001"), Some(1));
        assert_eq!(ms("0"), None);
        assert_eq!(ms("-1"), None);
        assert_eq!(ms("soon"), None);
        assert_eq!(ms("1e9"), None);
    }
}
