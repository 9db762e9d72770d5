//! `--protocol openai`: the same load sent through the orchestrator's HTTP gateway
//! (`POST /v1/chat/completions`, docs/gateway.md) instead of gRPC, so the gateway's
//! overhead is measured by the same driver, workload and report as a direct Solve.
//!
//! Each request is the OpenAI form of the `SolveRequest` the workload made (question as
//! the user message, Ponder's options in `ponder`); the answer is read back from the
//! response's `ponder` field, which is the `SolveResponse` with the proto's field names,
//! and an error body back into the gRPC status it was mapped from. Plain HTTP/1.1 with a
//! keep-alive pool (hyper's client): the driver measures the gateway, not TLS.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use ponder_proto::v1 as pb;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Code, Status};

#[derive(Clone)]
pub struct HttpTarget {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port/v1/chat/completions`.
    url: hyper::Uri,
    /// `Bearer <key>` (`--token`), when the gateway wants an API key.
    authorization: Option<String>,
}

impl HttpTarget {
    /// The gateway at `addr` (`host:port` or an `http://` URL; `https` is refused).
    pub fn new(addr: &str, connections: usize, token: Option<&str>) -> anyhow::Result<Self> {
        let base = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        anyhow::ensure!(
            base.starts_with("http://"),
            "--protocol openai speaks plain HTTP to the gateway (it measures the gateway, \
             not TLS): give an http:// address, got {addr}"
        );
        let url = format!("{}/v1/chat/completions", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| anyhow::anyhow!("--addr {addr}: {e}"))?;
        // Nagle off: a request's headers and body leave together (as tonic's channels do).
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections.max(1) * 64)
            .build(connector);
        Ok(Self {
            client,
            url,
            authorization: token.map(|t| format!("Bearer {t}")),
        })
    }

    /// Sends one request and waits for its answer, at most `timeout` (also sent as
    /// the gateway's deadline header). `stream` asks for server-sent events and notes
    /// when the first progress event arrived.
    pub async fn call(
        &self,
        req: &pb::SolveRequest,
        stream: bool,
        timeout: Duration,
    ) -> (Result<pb::SolveResponse, Status>, Option<Instant>) {
        let mut first_event = None;
        let call = self.exchange(req, stream, timeout, &mut first_event);
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded("the client's deadline passed")),
        };
        (result, first_event)
    }

    async fn exchange(
        &self,
        req: &pb::SolveRequest,
        stream: bool,
        timeout: Duration,
        first_event: &mut Option<Instant>,
    ) -> Result<pb::SolveResponse, Status> {
        let body = request_body(req, stream)?;
        let mut request = hyper::Request::post(self.url.clone());
        if let Some(a) = &self.authorization {
            request = request.header("authorization", a);
        }
        let request = request
            .header("content-type", "application/json")
            .header("x-request-timeout", format!("{:.3}", timeout.as_secs_f64()))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Status::internal(e.to_string()))?;
        let resp = self
            .client
            .request(request)
            .await
            .map_err(|e| Status::unavailable(format!("the gateway: {e}")))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() || !stream {
            let bytes = body
                .collect()
                .await
                .map_err(|e| Status::unavailable(format!("reading the response: {e}")))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
                Status::internal(format!("the gateway sent no JSON ({status}): {e}"))
            })?;
            return answer(&v);
        }
        // Server-sent events: `data: <json>` lines; the chunk with a finish_reason has
        // the whole response in `ponder`.
        let mut pending = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Status::unavailable(format!("the stream: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                for line in event.lines() {
                    let Some(data) = line.strip_prefix("data: ") else {
                        continue;
                    };
                    if data == "[DONE]" {
                        return Err(Status::unknown("the stream ended without a final chunk"));
                    }
                    let v: Value = serde_json::from_str(data)
                        .map_err(|e| Status::internal(format!("a chunk is not JSON: {e}")))?;
                    if v.get("error").is_some() {
                        return answer(&v);
                    }
                    let finished = v["choices"][0]["finish_reason"].is_string();
                    if finished {
                        return answer(&v);
                    }
                    if v["ponder"].is_object() {
                        first_event.get_or_insert_with(Instant::now);
                    }
                }
            }
        }
        Err(Status::unknown("the stream ended without a final chunk"))
    }
}

/// The OpenAI form of a workload request.
fn request_body(req: &pb::SolveRequest, stream: bool) -> Result<Value, Status> {
    let mut ponder = serde_json::Map::new();
    let mut body = json!({
        "messages": [{"role": "user", "content": req.question}],
        "seed": req.seed,
        "stream": stream,
    });
    if let Some(b) = &req.budget {
        ponder.insert("budget".into(), json!(b.max_generations));
        if b.max_flops > 0.0 {
            ponder.insert("max_flops".into(), json!(b.max_flops));
        }
        if b.max_tokens > 0 {
            body["max_tokens"] = json!(b.max_tokens);
        }
        if b.min_generations > 0 {
            ponder.insert("min_budget".into(), json!(b.min_generations));
        }
    }
    if let Some(mode) = ponder_cluster::wire::budget_mode_from_pb(req.budget_mode) {
        ponder.insert("budget_mode".into(), json!(mode.name()));
    }
    match req.strategy.as_ref().and_then(|s| s.kind.as_ref()) {
        None => {}
        Some(pb::strategy::Kind::Name(n)) => {
            ponder.insert("strategy".into(), json!(n));
        }
        Some(other) => {
            return Err(Status::invalid_argument(format!(
                "--protocol openai sends strategies by name; {other:?} has none"
            )))
        }
    }
    if !req.aggregation.is_empty() {
        ponder.insert("aggregation".into(), json!(req.aggregation));
    }
    if req.strict {
        ponder.insert("strict".into(), json!(true));
    }
    if req.temperature != 0.0 {
        body["temperature"] = json!(req.temperature);
    }
    if !req.model_id.is_empty() {
        body["model"] = json!(req.model_id);
    }
    body["ponder"] = Value::Object(ponder);
    Ok(body)
}

/// A completion (or its final chunk) as the `SolveResponse` in its `ponder` field, or
/// an error body as its gRPC status.
fn answer(v: &Value) -> Result<pb::SolveResponse, Status> {
    if let Some(e) = v.get("error") {
        let name = e["code"].as_str().unwrap_or("unknown").to_ascii_uppercase();
        let code = (0..=16)
            .map(Code::from_i32)
            .find(|c| crate::target::code_name(*c) == name)
            .unwrap_or(Code::Unknown);
        return Err(Status::new(
            code,
            e["message"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let p = &v["ponder"];
    let u = &p["usage"];
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    Ok(pb::SolveResponse {
        answer: p["answer"].as_str().unwrap_or_default().into(),
        solution: p["solution"].as_str().unwrap_or_default().into(),
        score: p["score"].as_f64().unwrap_or(0.0) as f32,
        strategy: p["strategy"].as_str().unwrap_or_default().into(),
        request_id: p["request_id"].as_str().unwrap_or_default().into(),
        partial: p["partial"].as_bool().unwrap_or(false),
        model_id: p["model_id"].as_str().unwrap_or_default().into(),
        budget_granted: num(&p["budget_granted"]) as u32,
        budget_reason: p["budget_reason"].as_str().unwrap_or_default().into(),
        budget_mode: ponder_cluster::wire::budget_mode_to_pb(
            p["budget_mode"]
                .as_str()
                .and_then(|m| ponder_search::BudgetMode::parse(m).ok()),
        )
        .into(),
        difficulty_bin: num(&p["difficulty_bin"]) as u32,
        elapsed_seconds: p["elapsed_seconds"].as_f64().unwrap_or(0.0),
        calls_seconds: p["calls_seconds"].as_f64().unwrap_or(0.0),
        usage: Some(pb::Usage {
            generations: num(&u["generations"]) as u32,
            generator_tokens: num(&u["generator_tokens"]),
            verifier_tokens: num(&u["verifier_tokens"]),
            prompt_tokens: num(&u["prompt_tokens"]),
            cached_prompt_tokens: num(&u["cached_prompt_tokens"]),
            flops: u["flops"].as_f64().unwrap_or(0.0),
            generator_flops: u["generator_flops"].as_f64().unwrap_or(0.0),
            verifier_flops: u["verifier_flops"].as_f64().unwrap_or(0.0),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_request_keeps_its_options() {
        let req = pb::SolveRequest {
            question: "47+38".into(),
            budget: Some(pb::Budget {
                max_generations: 4,
                max_tokens: 900,
                max_flops: 2e10,
                ..Default::default()
            }),
            strategy: Some(pb::Strategy {
                kind: Some(pb::strategy::Kind::Name("beam_search:4".into())),
            }),
            seed: 3,
            model_id: "arith-gen".into(),
            ..Default::default()
        };
        let b = request_body(&req, true).unwrap();
        assert_eq!(b["messages"][0]["content"], "47+38");
        assert_eq!(b["ponder"]["budget"], 4);
        assert_eq!(b["ponder"]["strategy"], "beam_search:4");
        assert_eq!(b["ponder"]["max_flops"], 2e10);
        assert_eq!(b["max_tokens"], 900);
        assert_eq!(b["model"], "arith-gen");
        assert_eq!(b["stream"], true);
    }

    #[test]
    fn an_error_body_is_its_status_again() {
        let e = answer(&json!({"error": {"code": "resource_exhausted", "message": "busy"}}))
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(e.message(), "busy");
        let r = answer(&json!({"ponder": {"answer": "85", "usage": {"generations": 4}}})).unwrap();
        assert_eq!(r.answer, "85");
        assert_eq!(r.usage.unwrap().generations, 4);
    }
}
