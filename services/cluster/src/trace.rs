//! Traces across hops: `tracing` spans exported over OTLP/gRPC (`--otlp-endpoint`, off
//! by default), and W3C trace context (`traceparent`) carried in gRPC metadata from the
//! client through the orchestrator to every generate and score call (docs/tracing.md).
//!
//! Why through `tracing` (tracing-opentelemetry) rather than the OpenTelemetry API
//! directly: the code already describes its work with `tracing` spans, so one span per
//! query, round and call serves the logs and the traces alike, and with export off
//! nothing changes on the hot path. Only spans of Ponder's own crates are exported,
//! not tonic's or h2's: a trace shows the search, not the HTTP/2 framing.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use std::sync::OnceLock;
use std::time::Duration;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;

/// How often finished spans are sent: short, so that a trace shows up while its query
/// is still being looked at.
pub const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// The provider of this process, kept for [`shutdown`] (export is per process).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The layer that turns Ponder's spans into OpenTelemetry spans of `service` and sends
/// them to the OTLP/gRPC collector at `endpoint`. Needs a tokio runtime (the exporter
/// is a tonic client).
pub fn otlp_layer<S>(
    endpoint: &str,
    service: &str,
) -> anyhow::Result<impl Layer<S> + Send + Sync + 'static>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use opentelemetry_otlp::WithExportConfig;
    anyhow::ensure!(
        endpoint.starts_with("http://") || endpoint.starts_with("https://"),
        "--otlp-endpoint must be an http:// or https:// URL of an OTLP/gRPC collector \
         (e.g. http://otel-collector:4317), got {endpoint:?}"
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint}: {e}"))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_DELAY)
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_string())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("ponder");
    let _ = PROVIDER.set(provider);
    let ours = tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_span() && meta.target().starts_with("ponder")
    });
    Ok(tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(ours))
}

/// Sends the spans not yet exported (call once, at the end of the process).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.shutdown();
    }
}

struct Read<'a>(&'a MetadataMap);

impl Extractor for Read<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

struct Write<'a>(&'a mut MetadataMap);

impl Injector for Write<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Makes `span` a child of the trace context in `metadata` (`traceparent`, from the
/// client or the orchestrator), if it carries one.
pub fn continue_from(span: &tracing::Span, metadata: &MetadataMap) {
    let parent = TraceContextPropagator::new().extract(&Read(metadata));
    let _ = span.set_parent(parent);
}

/// Writes the trace context of `span` into `metadata`, so the callee's spans join the
/// trace. Writes nothing while no trace is being recorded.
pub fn inject(span: &tracing::Span, metadata: &mut MetadataMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut Write(metadata));
}
