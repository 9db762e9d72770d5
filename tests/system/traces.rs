//! One trace across three services (docs/tracing.md): an orchestrator, a generator and
//! a verifier, each its own process exporting over OTLP to a real TraceService server
//! in the test, and a client whose `traceparent` the whole query continues.

use crate::common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A collector that keeps every span it is sent, with its service's name.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_crosses_orchestrator_generator_and_verifier() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let (gen, prm) = (generator_model(), verifier_model());
    let otlp = ["--otlp-endpoint", endpoint.as_str()];
    let (_g, ag) = spawn_node(
        "generator",
        &[&["--model", gen.to_str().unwrap()][..], &otlp].concat(),
    );
    let (_v, av) = spawn_node(
        "verifier",
        &[&["--model", prm.to_str().unwrap()][..], &otlp].concat(),
    );
    let (_o, ao) = spawn_node(
        "orchestrator",
        &[&["--generators", &ag, "--verifiers", &av][..], &otlp].concat(),
    );
    let mut c = client(&ao).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut req = tonic::Request::new(request("(47+38)*3-19", 4, 5));
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let r = c.solve(req).await.unwrap().into_inner();
    assert_eq!(r.usage.unwrap().generations, 4);

    // Spans are sent in batches every second.
    let ours = |service: &str, name: &str| {
        let spans = collector.0.lock().unwrap();
        spans
            .iter()
            .filter(|(s, sp)| s == service && sp.name == name && hex(&sp.trace_id) == trace_id)
            .map(|(_, sp)| (hex(&sp.span_id), hex(&sp.parent_span_id)))
            .collect::<Vec<_>>()
    };
    let complete = || {
        !ours("ponder-orchestrator", "query").is_empty()
            && !ours("ponder-generator", "rpc").is_empty()
            && !ours("ponder-verifier", "rpc").is_empty()
    };
    assert!(
        eventually(Duration::from_secs(15), complete).await,
        "spans of the trace: {:?}",
        collector
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(s, sp)| (s.clone(), sp.name.clone(), hex(&sp.trace_id)))
            .collect::<Vec<_>>()
    );
    // The query continues the client's span; rounds are its children, calls theirs,
    // and each worker's span is the child of the orchestrator's call span.
    let query = ours("ponder-orchestrator", "query");
    assert_eq!(query.len(), 1);
    assert_eq!(query[0].1, "00f067aa0ba902b7");
    // The query span carries its budget and what it spent.
    let attributes: Vec<(String, String)> = {
        let spans = collector.0.lock().unwrap();
        let (_, span) = spans
            .iter()
            .find(|(s, sp)| s == "ponder-orchestrator" && sp.name == "query")
            .unwrap();
        span.attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::IntValue(i)) => i.to_string(),
                    Some(Value::DoubleValue(d)) => d.to_string(),
                    Some(Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    };
    let attr = |k: &str| attributes.iter().find(|a| a.0 == k).map(|a| a.1.clone());
    assert_eq!(attr("budget").as_deref(), Some("4"), "{attributes:?}");
    assert_eq!(attr("generations").as_deref(), Some("4"), "{attributes:?}");
    assert!(
        attr("flops").is_some_and(|f| f.parse::<f64>().unwrap() > 0.0),
        "{attributes:?}"
    );
    assert!(attr("strategy").is_some(), "{attributes:?}");
    let rounds = ours("ponder-orchestrator", "round");
    assert!(rounds.iter().all(|r| r.1 == query[0].0), "{rounds:?}");
    for (call, worker) in [
        ("generate", "ponder-generator"),
        ("score", "ponder-verifier"),
    ] {
        let calls = ours("ponder-orchestrator", call);
        assert!(!calls.is_empty(), "no {call} span");
        assert!(
            calls.iter().all(|c| rounds.iter().any(|r| r.0 == c.1)),
            "{call} spans outside the rounds: {calls:?}"
        );
        for rpc in ours(worker, "rpc") {
            assert!(
                calls.iter().any(|c| c.0 == rpc.1),
                "a {worker} span whose parent is no {call} call span: {rpc:?}"
            );
        }
    }
    server.abort();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Worker logs carry the request id at info level for one query in
/// `ponder_worker::rpc::LOG_ONE_IN`, chosen by a hash of the id (docs/tracing.md): a
/// sampled id's call is logged with it, an unsampled one's is not, so a followed query
/// can be found on every node without a line per call under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_logs_carry_the_request_id_of_sampled_queries() {
    use crate::common::security::spawn_node_logged;
    use ponder_proto::v1 as pb;
    use ponder_worker::rpc::LOG_ONE_IN;
    let sampled = |id: &String| ponder_search::solve::hash(id).is_multiple_of(LOG_ONE_IN);
    let ids: Vec<String> = (0..1000).map(|i| format!("follow-me-{i}")).collect();
    let logged = ids.iter().find(|id| sampled(id)).unwrap().clone();
    let quiet = ids.iter().find(|id| !sampled(id)).unwrap().clone();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("generator.log");
    let env = [
        ("PONDER_LISTEN", "127.0.0.1:0".to_string()),
        ("PONDER_MODEL", generator_model().display().to_string()),
        ("RUST_LOG", "info".into()),
    ];
    let (proc, addr) = spawn_node_logged("generator", &env, &log);
    let mut client = pb::generator_client::GeneratorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    for id in [&logged, &quiet] {
        let mut req = tonic::Request::new(pb::GenerateRequest {
            prompt: "Q: 47+38\n".into(),
            n: 1,
            params: Some(pb::SamplingParams {
                max_tokens: 8,
                ..Default::default()
            }),
        });
        req.metadata_mut()
            .insert(ponder_cluster::request_id::HEADER, id.parse().unwrap());
        client.generate(req).await.unwrap();
    }
    // The log is written as the calls finish; give the writer a moment.
    let text = {
        let mut text = String::new();
        for _ in 0..50 {
            text = std::fs::read_to_string(&log).unwrap();
            if text.contains(&logged) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        text
    };
    let line = text
        .lines()
        .find(|l| l.contains(&logged))
        .unwrap_or_else(|| panic!("no line names {logged}:\n{text}"));
    assert!(line.contains("INFO") && line.contains("Generate"), "{line}");
    assert!(
        !text.contains(&quiet),
        "an unsampled call was logged:\n{text}"
    );
    drop(proc);
}
