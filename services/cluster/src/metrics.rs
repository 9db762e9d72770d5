//! Prometheus metrics for every service, served as text on `/metrics`.
//!
//! One registry per process; each node or the orchestrator labels its series with
//! its role, so an embedded cluster (all roles in one process) stays readable.

use axum::{routing::get, Router};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub type Labels = Vec<(String, String)>;
/// A labelled counter family (most of ours).
pub type CounterFamily = Family<Labels, Counter>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

fn count_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// The metric families all services share.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub requests: Family<Labels, Counter>,
    pub latency: Family<Labels, Histogram, fn() -> Histogram>,
    pub in_flight: Family<Labels, Gauge>,
    pub queue_depth: Family<Labels, Gauge>,
    pub batch_size: Family<Labels, Gauge>,
    pub tokens: Family<Labels, Counter<u64, AtomicU64>>,
    pub query_generations: Family<Labels, Histogram, fn() -> Histogram>,
    pub query_tokens: Family<Labels, Histogram, fn() -> Histogram>,
    /// Seconds from the start of loading a node's model to serving it, warm-up included.
    pub model_load_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    pub worker_threads: Family<Labels, Gauge>,
    /// A worker node's engine: 1, labelled `engine` (`candle`, or `recorded` for a node
    /// replaying a recording, docs/scaling.md).
    pub worker_engine: Family<Labels, Gauge>,
    pub resident_memory_bytes: Gauge,
    /// Refusals by what was refused (a member, a request) and why.
    pub refusals: Family<Labels, Counter>,
    /// Per client (API key name; "anonymous" for an open API): queries by status code,
    /// and the generations and tokens they used.
    pub client_queries: Family<Labels, Counter>,
    pub client_generations: Family<Labels, Counter<u64, AtomicU64>>,
    pub client_tokens: Family<Labels, Counter<u64, AtomicU64>>,
    /// Model worker: sequences decoding (`running`) and requests not yet admitted to
    /// the batch (`waiting`).
    pub sequences: Family<Labels, Gauge>,
    /// Model worker: prefix-cache lookups by result (`hit`, `miss`).
    pub prefix_cache_lookups: Family<Labels, Counter<u64, AtomicU64>>,
    /// Model worker: prompt tokens whose KV came from the prefix cache.
    pub prefix_cache_saved_tokens: Family<Labels, Counter<u64, AtomicU64>>,
    /// Model worker: KV tokens the prefix cache holds.
    pub prefix_cache_tokens: Family<Labels, Gauge>,
    /// Model worker: bytes of KV buffers held by the prefix cache.
    pub prefix_cache_bytes: Family<Labels, Gauge>,
    /// Orchestrator: seconds from a SolveStream request to its first progress event.
    pub first_event: Family<Labels, Histogram, fn() -> Histogram>,
    /// Orchestrator: answers the deadline cut short, by strategy.
    pub partial_answers: Family<Labels, Counter>,
    /// Orchestrator: calls retried on another member, by the members' role.
    pub retries: Family<Labels, Counter>,
    /// Orchestrator: members ejected after a failed call, by role.
    pub ejections: Family<Labels, Counter>,
    /// Orchestrator: hedged calls (a copy sent to another member when the first was
    /// slow), by role and result (`won`, `lost`, `failed`).
    pub hedges: Family<Labels, Counter>,
    /// Orchestrator: first attempts of calls, by role and whether they went to the
    /// member their query's affinity key ranks first (`preferred`) or not (`other`).
    pub affinity_routes: Family<Labels, Counter>,
    /// Orchestrator: members by role and state (`ready`, `ejected`, `connecting`).
    pub members: Family<Labels, Gauge>,
    /// Orchestrator with etcd discovery: 1 while its watch runs, 0 while etcd is lost.
    pub etcd_watch_up: Gauge,
}

/// This process's resident set size, from `/proc/self/status` (None where there is none).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("ponder");
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let in_flight = Family::<Labels, Gauge>::default();
        let queue_depth = Family::<Labels, Gauge>::default();
        let batch_size = Family::<Labels, Gauge>::default();
        let tokens = Family::<Labels, Counter<u64, AtomicU64>>::default();
        let query_generations =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
                count_histogram as fn() -> Histogram,
            );
        let query_tokens = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            count_histogram as fn() -> Histogram,
        );
        let model_load_seconds = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let worker_threads = Family::<Labels, Gauge>::default();
        let worker_engine = Family::<Labels, Gauge>::default();
        r.register(
            "worker_engine",
            "worker node: 1, labelled with what answers its calls (candle: the model; recorded: a recording served at a fitted latency, scale measurements only)",
            worker_engine.clone(),
        );
        let resident_memory_bytes = Gauge::default();
        let refusals = Family::<Labels, Counter>::default();
        let client_queries = Family::<Labels, Counter>::default();
        let client_generations = Family::<Labels, Counter<u64, AtomicU64>>::default();
        let client_tokens = Family::<Labels, Counter<u64, AtomicU64>>::default();
        let sequences = Family::<Labels, Gauge>::default();
        let prefix_cache_lookups = Family::<Labels, Counter<u64, AtomicU64>>::default();
        let prefix_cache_saved_tokens = Family::<Labels, Counter<u64, AtomicU64>>::default();
        let prefix_cache_tokens = Family::<Labels, Gauge>::default();
        let prefix_cache_bytes = Family::<Labels, Gauge>::default();
        let first_event = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let partial_answers = Family::<Labels, Counter>::default();
        let retries = Family::<Labels, Counter>::default();
        let ejections = Family::<Labels, Counter>::default();
        let hedges = Family::<Labels, Counter>::default();
        let affinity_routes = Family::<Labels, Counter>::default();
        let members = Family::<Labels, Gauge>::default();
        let etcd_watch_up = Gauge::default();
        r.register(
            "etcd_watch_up",
            "orchestrator with etcd discovery: 1 while the membership watch runs, 0 while etcd is unreachable (membership frozen)",
            etcd_watch_up.clone(),
        );
        r.register(
            "sequences",
            "model worker: sequences by state (running: in the decode batch; waiting: accepted, not yet admitted)",
            sequences.clone(),
        );
        r.register(
            "prefix_cache_lookups",
            "model worker: prefix-cache lookups by result (hit, miss)",
            prefix_cache_lookups.clone(),
        );
        r.register(
            "prefix_cache_saved_tokens",
            "model worker: prompt tokens whose KV came from the prefix cache instead of a forward pass",
            prefix_cache_saved_tokens.clone(),
        );
        r.register(
            "prefix_cache_tokens",
            "model worker: KV tokens held by the prefix cache",
            prefix_cache_tokens.clone(),
        );
        r.register(
            "prefix_cache_bytes",
            "model worker: bytes of KV buffers held by the prefix cache",
            prefix_cache_bytes.clone(),
        );
        r.register(
            "first_event_seconds",
            "orchestrator: time from a SolveStream request to its first progress event",
            first_event.clone(),
        );
        r.register(
            "partial_answers",
            "orchestrator: answers cut short by the deadline (best so far), by strategy",
            partial_answers.clone(),
        );
        r.register(
            "retries",
            "orchestrator: generate/score calls retried on another member, by the members' role",
            retries.clone(),
        );
        r.register(
            "ejections",
            "orchestrator: members ejected from routing after a failed call, by role",
            ejections.clone(),
        );
        r.register(
            "hedges",
            "orchestrator: generate/score calls hedged on a second member after running longer than the role's 95th percentile, by role and result (won: the copy answered first; lost: the first call did; failed: neither)",
            hedges.clone(),
        );
        r.register(
            "affinity_routes",
            "orchestrator: first attempts of generate/score calls by role and result (preferred: the member the query's affinity key ranks first; other)",
            affinity_routes.clone(),
        );
        r.register(
            "members",
            "orchestrator: known members by role and state (ready, ejected, connecting)",
            members.clone(),
        );
        r.register(
            "client_queries",
            "queries per client (API key name, or anonymous) and status code",
            client_queries.clone(),
        );
        r.register(
            "client_generations",
            "generations used per client",
            client_generations.clone(),
        );
        r.register(
            "client_tokens",
            "generator + verifier tokens used per client",
            client_tokens.clone(),
        );
        r.register(
            "refusals",
            "things refused, by what (member: a discovered node; request: an API call) and reason",
            refusals.clone(),
        );
        r.register(
            "model_load_seconds",
            "seconds from the start of loading the model to serving it, warm-up included (what an autoscaler waits for)",
            model_load_seconds.clone(),
        );
        r.register(
            "worker_threads",
            "compute threads of the model worker",
            worker_threads.clone(),
        );
        r.register(
            "resident_memory_bytes",
            "resident set size of this process",
            resident_memory_bytes.clone(),
        );
        r.register(
            "requests",
            "gRPC requests by role, method and status code",
            requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "gRPC request latency",
            latency.clone(),
        );
        r.register(
            "in_flight_requests",
            "requests being served",
            in_flight.clone(),
        );
        r.register(
            "queue_depth",
            "requests accepted by the model worker and not yet answered",
            queue_depth.clone(),
        );
        r.register(
            "batch_size",
            "sequences in the model worker's latest decode step (0 when idle)",
            batch_size.clone(),
        );
        r.register(
            "tokens",
            "tokens processed by kind (prompt, generated, scored)",
            tokens.clone(),
        );
        r.register(
            "query_generations",
            "generations used per query (orchestrator)",
            query_generations.clone(),
        );
        r.register(
            "query_tokens",
            "generator + verifier tokens used per query (orchestrator)",
            query_tokens.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(r)),
            requests,
            latency,
            in_flight,
            queue_depth,
            batch_size,
            tokens,
            query_generations,
            query_tokens,
            model_load_seconds,
            worker_threads,
            worker_engine,
            resident_memory_bytes,
            refusals,
            client_queries,
            client_generations,
            client_tokens,
            sequences,
            prefix_cache_lookups,
            prefix_cache_saved_tokens,
            prefix_cache_tokens,
            prefix_cache_bytes,
            first_event,
            partial_answers,
            retries,
            ejections,
            hedges,
            affinity_routes,
            members,
            etcd_watch_up,
        }
    }

    /// Logging, tracing and metrics as every service binary sets them up from its node
    /// flags: a subscriber in the chosen format, span export to `--otlp-endpoint` as
    /// `ponder-<role>` if given, and `/metrics` on `--metrics-addr` if given.
    pub async fn for_binary(args: &crate::node::NodeArgs, role: &str) -> anyhow::Result<Self> {
        let service = format!("ponder-{role}");
        let otlp = args.otlp_endpoint.as_deref().map(|e| (e, service.as_str()));
        crate::telemetry::init_tracing(args.log_format, otlp)?;
        if let Some(e) = &args.otlp_endpoint {
            tracing::info!(endpoint = %e, service, "exporting traces over OTLP");
        }
        let metrics = Self::new();
        if let Some(addr) = args.metrics_addr {
            let bound = metrics.serve(addr).await?;
            tracing::info!(%bound, "metrics on /metrics");
        }
        Ok(metrics)
    }

    /// Registers a family that one service owns (it keeps the handle), beside the
    /// shared ones.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(name, help, metric);
    }

    pub fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Times one RPC: in-flight while alive, then counts and observes it on `finish`.
    pub fn start(&self, role: &str, method: &str) -> RpcTimer {
        let labels = Self::labels(&[("role", role), ("method", method)]);
        self.in_flight.get_or_create(&labels).inc();
        RpcTimer {
            metrics: self.clone(),
            labels,
            start: Instant::now(),
            done: false,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().expect("metrics registry lock");
        encode(&mut out, &reg).expect("writing to a String cannot fail");
        out
    }

    /// Serves `/metrics` on `addr` until the process ends. Returns the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let me = self.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let me = me.clone();
                async move { me.render() }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
        Ok(bound)
    }
}

pub struct RpcTimer {
    metrics: Metrics,
    labels: Labels,
    start: Instant,
    done: bool,
}

impl RpcTimer {
    pub fn finish(mut self, code: tonic::Code) {
        self.record(code);
    }

    fn record(&mut self, code: tonic::Code) {
        if self.done {
            return;
        }
        self.done = true;
        self.metrics.in_flight.get_or_create(&self.labels).dec();
        self.metrics
            .latency
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
        let mut with_code = self.labels.clone();
        with_code.push(("code".into(), code_name(code).into()));
        self.metrics.requests.get_or_create(&with_code).inc();
    }
}

impl Drop for RpcTimer {
    fn drop(&mut self) {
        // A handler dropped mid-way (client went away) counts as cancelled.
        self.record(tonic::Code::Cancelled);
    }
}

/// gRPC's canonical name of a status code (`RESOURCE_EXHAUSTED`), as metric labels and
/// logs carry it: the name every gRPC tool and dashboard uses, not Rust's `Debug` one.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status code of an RPC result, for [`RpcTimer::finish`].
pub fn code_of<T>(r: &Result<T, tonic::Status>) -> tonic::Code {
    match r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

#[cfg(test)]
mod code_name_tests {
    #[test]
    fn codes_are_labelled_by_their_grpc_names() {
        assert_eq!(
            super::code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
        let names: std::collections::HashSet<&str> = (0..=16)
            .map(|i| super::code_name(tonic::Code::from_i32(i)))
            .collect();
        assert_eq!(names.len(), 17, "one name per code");
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_')));
    }
}
