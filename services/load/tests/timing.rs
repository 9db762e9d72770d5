//! The driver's timing against a small in-test orchestrator that answers at once (and,
//! for one check, stalls once): latency counts from the intended send time, and the
//! open loop keeps its rate. A stand-in server is used here only because these checks
//! need a server whose timing is known exactly; everything else runs against the real
//! cluster (tests/embedded_cluster.rs).

use ponder_load::arrivals::Arrivals;
use ponder_load::driver::{Loop, Plan};
use ponder_load::mix::Mix;
use ponder_load::progress::Counters;
use ponder_load::record::Record;
use ponder_load::report::{Report, RunInfo};
use ponder_load::target::{Protocol, Rpc, Target};
use ponder_load::workload::{Questions, Workload};
use ponder_proto::v1 as pb;
use ponder_proto::v1::orchestrator_server::{Orchestrator, OrchestratorServer};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Answers every Solve at once, except request number `stall_at`, which it holds for
/// `stall` first.
struct Stub {
    received: AtomicU64,
    stall_at: Option<u64>,
    stall: Duration,
}

#[tonic::async_trait]
impl Orchestrator for Stub {
    async fn solve(
        &self,
        _request: Request<pb::SolveRequest>,
    ) -> Result<Response<pb::SolveResponse>, Status> {
        if Some(self.received.fetch_add(1, SeqCst)) == self.stall_at {
            tokio::time::sleep(self.stall).await;
        }
        Ok(Response::new(pb::SolveResponse {
            answer: "0".into(),
            ..Default::default()
        }))
    }

    type SolveStreamStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SolveEvent, Status>> + Send>>;

    async fn solve_stream(
        &self,
        _request: Request<pb::SolveRequest>,
    ) -> Result<Response<Self::SolveStreamStream>, Status> {
        Err(Status::unimplemented("the stub answers Solve only"))
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        Err(Status::unimplemented("the stub answers Solve only"))
    }
}

/// Solve calls to `addrs` over `connections` each, with a 30 s deadline.
async fn connect(
    addrs: &[String],
    connections: usize,
    protocol: Protocol,
) -> anyhow::Result<Target> {
    Target::connect(
        addrs,
        &Default::default(),
        connections,
        Rpc::Solve,
        Duration::from_secs(30),
        protocol,
    )
    .await
}

async fn stub(stall_at: Option<u64>, stall: Duration) -> SocketAddr {
    counted_stub(stall_at, stall).await.0
}

/// A stub and the count of Solve calls it has received.
async fn counted_stub(stall_at: Option<u64>, stall: Duration) -> (SocketAddr, Arc<Stub>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stub = Arc::new(Stub {
        received: AtomicU64::new(0),
        stall_at,
        stall,
    });
    let service = OrchestratorServer::from_arc(stub.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, stub)
}

fn workload() -> Workload {
    Workload {
        cycle: None,
        questions: Questions::Arith {
            levels: vec![(1, 1.0)],
        },
        mix: Mix::parse("best_of_n:4").unwrap(),
        seed: 0,
        max_tokens: 0,
        model_id: String::new(),
    }
}

fn open(rate: f64, arrivals: Arrivals, max_concurrency: Option<usize>, secs: u64) -> Plan {
    Plan {
        mode: Loop::Open {
            rate,
            arrivals,
            max_concurrency,
        },
        duration: Some(Duration::from_secs(secs)),
        requests: None,
        warmup: Duration::ZERO,
        grace: Duration::from_secs(10),
        max_time: Duration::from_secs(60),
        seed: 1,
    }
}

async fn run(addr: SocketAddr, plan: &Plan) -> (Vec<Record>, Report) {
    let target = connect(&[addr.to_string()], 1, Protocol::Grpc)
        .await
        .unwrap();
    let w = workload();
    let records = ponder_load::run(plan, &target, &w, Arc::new(Counters::default()))
        .await
        .unwrap();
    let info = RunInfo {
        target: addr.to_string(),
        rpc: Rpc::Solve,
        mode: plan.mode,
        workload: w.label(),
        mix: w.mix.label(),
        warmup_s: 0.0,
        duration_s: plan.duration.map(|d| d.as_secs_f64()),
        requests: None,
        slo_s: None,
        slo_percentile: 99.0,
    };
    let report = Report::build(info, &records);
    (records, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_counts_a_stall_for_every_request_scheduled_during_it() {
    // One request at a time (the concurrency cap is where a closed-loop driver would
    // omit): while request 100 (sent at ~1 s) is held for STALL, the ~100 requests
    // scheduled meanwhile wait for the slot. Measured from their intended send time
    // each must show the part of the stall it sat through.
    const STALL: Duration = Duration::from_secs(1);
    let addr = stub(Some(100), STALL).await;
    let (records, report) = run(addr, &open(100.0, Arrivals::Constant, Some(1), 3)).await;
    assert!(
        (299..=301).contains(&records.len()),
        "{} requests",
        records.len()
    );
    assert!(records.iter().all(|r| r.ok()), "every request answered");
    let stalled = records
        .iter()
        .max_by(|a, b| a.service_s.unwrap().total_cmp(&b.service_s.unwrap()))
        .unwrap();
    assert_eq!(stalled.index, 100, "the stub stalls its 101st request");
    assert!(stalled.service_s.unwrap() >= STALL.as_secs_f64());
    let (from, to) = (stalled.sent_s.unwrap(), stalled.done_s.unwrap());
    let during: Vec<&Record> = records
        .iter()
        .filter(|r| r.intended_s > from && r.intended_s < to)
        .collect();
    assert!(
        during.len() >= 95,
        "{} scheduled during the stall",
        during.len()
    );
    for r in &during {
        let waited = to - r.intended_s;
        assert!(
            r.latency_s.unwrap() >= waited - 1e-6,
            "request {} scheduled {:.3} s before the stall ended reports {:.3} s",
            r.index,
            waited,
            r.latency_s.unwrap()
        );
    }
    let latency = report.latency.unwrap();
    let service = report.service_time.unwrap();
    assert!(
        latency.p99 >= 0.9 * STALL.as_secs_f64(),
        "corrected p99 {:.3} s hides a {STALL:?} stall",
        latency.p99
    );
    // What a driver measuring from the actual send would report: the stall vanishes.
    assert!(
        service.p99 < 0.2 * STALL.as_secs_f64(),
        "service-time p99 {:.3} s",
        service.p99
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_keeps_its_rate_at_200_per_second() {
    // Both schedules at once against two servers: 5 s of wall time, not 10.
    let (a, b) = (
        stub(None, Duration::ZERO).await,
        stub(None, Duration::ZERO).await,
    );
    let constant = open(200.0, Arrivals::Constant, None, 5);
    let poisson = open(200.0, Arrivals::POISSON, None, 5);
    let ((cr, c), (pr, p)) = tokio::join!(run(a, &constant), run(b, &poisson));

    assert!((999..=1001).contains(&c.sent), "{} sent", c.sent);
    assert_eq!(c.ok, c.sent);
    let rate = c.send_rate.unwrap();
    assert!(
        (rate - 200.0).abs() <= 4.0,
        "achieved {rate:.2}/s for 200/s"
    );
    assert!(
        (c.throughput - 200.0).abs() <= 4.0,
        "throughput {:.2}/s",
        c.throughput
    );
    // Absolute deadlines: the lag of a send behind its schedule never accumulates.
    let last = cr.last().unwrap();
    assert!(
        last.sent_s.unwrap() - last.intended_s < 0.05,
        "the last send lags {:.3} s",
        last.sent_s.unwrap() - last.intended_s
    );

    // A Poisson schedule's own count is random (about ±3% over 1000 arrivals); the
    // driver must follow it: achieved rate = the schedule's rate.
    let intended: Vec<f64> = pr.iter().map(|r| r.intended_s).collect();
    let scheduled = (intended.len() - 1) as f64 / (intended.last().unwrap() - intended[0]);
    let rate = p.send_rate.unwrap();
    assert!(
        (rate - scheduled).abs() <= 0.02 * scheduled,
        "achieved {rate:.2}/s for a schedule of {scheduled:.2}/s"
    );
    assert_eq!(p.ok, p.sent);
}

/// Several --addr: request i goes to the (i mod K)-th orchestrator, so each gets an
/// equal share, and every request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_spread_over_several_orchestrators_in_turn() {
    let stubs = [
        counted_stub(None, Duration::ZERO).await,
        counted_stub(None, Duration::ZERO).await,
        counted_stub(None, Duration::ZERO).await,
    ];
    let addrs: Vec<String> = stubs.iter().map(|(a, _)| a.to_string()).collect();
    let target = connect(&addrs, 2, Protocol::Grpc).await.unwrap();
    for i in 0..30 {
        let out = target.call(i, workload().job(i).request).await;
        assert!(out.result.is_ok());
    }
    for (_, stub) in &stubs {
        assert_eq!(stub.received.load(SeqCst), 10);
    }
    let one = vec![addrs[0].clone()];
    let openai = connect(&addrs, 1, Protocol::Openai).await;
    assert!(openai.is_err(), "the HTTP gateway takes one address");
    assert!(connect(&one, 1, Protocol::Grpc).await.is_ok());
}
