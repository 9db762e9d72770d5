//! The orchestrator: `ponder.v1.Orchestrator` over generator and verifier pools.
//!
//! The search itself is `ponder_search::solve`; this crate adds the wire contract
//! (`request`: wire types to search types and back), validation at the edge and the
//! query's task (`service`), the OpenAI-compatible HTTP gateway over that same service
//! (`gateway`), admission control (a bound on queries in progress,
//! `admission`), access control (API keys and per-client rate limits, `access`),
//! discovery of the pools and the node lifecycle.

pub mod access;
pub mod admission;
pub mod control;
pub mod gateway;
pub mod json;
pub mod request;
pub mod service;

use access::{AccessArgs, Gate};
use admission::Admission;
use clap::{Args, Parser};
use ponder_cluster::discovery::{Discovery, EtcdConfig, EtcdDiscovery, StaticDiscovery};
use ponder_cluster::member_check::Expectations;
use ponder_cluster::metrics::Metrics;
use ponder_cluster::node::{Node, NodeArgs};
use ponder_cluster::tls::ClientAuth;
use ponder_cluster::BoxedFuture;
use ponder_cluster::{Registry, Role};
use ponder_proto::v1::orchestrator_server::OrchestratorServer;
use ponder_search::strategy::compute_optimal::Policy;
use ponder_search::{QueryLimits, SolutionFormat};
use service::{OrchestratorService, Shared};
use std::path::PathBuf;
use std::sync::Arc;

pub const SERVICE_NAME: &str = "ponder.v1.Orchestrator";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ponder-orchestrator",
    version,
    about = "Serve ponder.v1.Orchestrator"
)]
pub struct OrchestratorArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Generator addresses (static membership; ignored when --etcd is set).
    #[arg(long, env = "PONDER_GENERATORS", value_delimiter = ',')]
    pub generators: Vec<String>,
    /// Verifier addresses (static membership; ignored when --etcd is set).
    #[arg(long, env = "PONDER_VERIFIERS", value_delimiter = ',')]
    pub verifiers: Vec<String>,
    /// Solution format JSON (prompt template, step delimiter, answer prefix); default:
    /// the bundled ponder-arith models' format.
    #[arg(long, env = "PONDER_FORMAT")]
    pub format: Option<PathBuf>,
    /// Compute-optimal policy JSON (fitted by `ponder eval`); default: the built-in,
    /// unfitted policy (docs/strategies.md).
    #[arg(long, env = "PONDER_POLICY")]
    pub policy: Option<PathBuf>,
    /// The generator model a request that pins none (`SolveRequest.model_id`) runs on,
    /// as its members report it in ModelInfo. Unset: the model with the most serving
    /// generators (docs/cluster.md, "Several models").
    #[arg(long, env = "PONDER_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Generations when a request sets no budget.
    #[arg(long, env = "PONDER_DEFAULT_GENERATIONS", default_value_t = request::DEFAULT_GENERATIONS)]
    pub default_generations: u32,
    /// Queries in progress at once; more are answered RESOURCE_EXHAUSTED.
    #[arg(long, env = "PONDER_MAX_QUERIES", default_value_t = 64)]
    pub max_queries: usize,
    /// Queries one client (API key, else address; IPv6 by /64) may have in progress at
    /// once; 0: no per-client limit. Per replica: K orchestrators admit K times this.
    #[arg(long, env = "PONDER_MAX_QUERIES_PER_CLIENT", default_value_t = DEFAULT_MAX_QUERIES_PER_CLIENT)]
    pub max_queries_per_client: usize,
    /// Generate and score calls one client may have in flight over all its queries; 0
    /// (the default): no limit beyond --max-queries-per-client x --max-calls-per-query.
    #[arg(long, env = "PONDER_MAX_CALLS_PER_CLIENT", default_value_t = 0)]
    pub max_calls_per_client: usize,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Show members' addresses in ClusterStatus. Off by default: every API key holder
    /// may call ClusterStatus, and pod addresses tell them where to aim.
    #[arg(long, env = "PONDER_STATUS_ADDRESSES")]
    pub status_addresses: bool,
    /// A model id a role's members may serve, as ROLE=MODEL_ID (repeatable, or
    /// comma-separated in the environment; a role given several ids accepts any of
    /// them): a member serving another model is refused (docs/security.md, "Members").
    #[arg(long, env = "PONDER_EXPECT_MODEL", value_delimiter = ',')]
    pub expect_model: Vec<String>,
    /// Accept members on the recorded backend (answers replayed from a recording at a
    /// fitted latency, no model): for scale measurements only (docs/scaling.md). Off:
    /// such members are refused.
    #[arg(long, env = "PONDER_ALLOW_RECORDED")]
    pub allow_recorded: bool,
    /// Route every call of a query to the same member first (rendezvous hashing on the
    /// query, within a bound on each member's calls in flight), so that its rounds hit
    /// that member's prefix cache. `false`: plain power of two choices, for measuring what affinity
    /// buys (docs/scaling.md, "Balance").
    #[arg(
        long,
        env = "PONDER_AFFINITY",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub affinity: bool,
    /// Hedge slow calls: a generate or score call still running after its role's 95th
    /// percentile latency gets a copy on another member, and the first answer wins
    /// (seeded calls answer alike). Hedges spend the retry budget. `false`: no copies
    /// (docs/reliability.md, "Slow members").
    #[arg(
        long,
        env = "PONDER_HEDGING",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub hedging: bool,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub control: control::ControlArgs,
    #[command(flatten)]
    pub gateway: gateway::GatewayArgs,
}

/// Queries one client may have in progress by default: half of --max-queries' default,
/// so one client never holds every slot, and a load driver on one host still gets
/// far.
pub const DEFAULT_MAX_QUERIES_PER_CLIENT: usize = 32;

/// The operator's caps on one query (docs/security.md, "Bounded compute").
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest budget.max_generations a request may ask for (larger ones are refused
    /// with INVALID_ARGUMENT); at most 4096.
    #[arg(long, env = "PONDER_MAX_GENERATIONS", default_value_t = DEFAULT_MAX_GENERATIONS)]
    pub max_generations: u32,
    /// Most rounds a tree strategy runs (a request's or the policy's max_rounds above
    /// it is lowered to it).
    #[arg(long, env = "PONDER_MAX_ROUNDS", default_value_t = DEFAULT_MAX_ROUNDS)]
    pub max_rounds: u32,
    /// The longest a query runs: its deadline when the client sets none, and the cap
    /// on one it sets; 0: no cap.
    #[arg(long, env = "PONDER_MAX_QUERY_SECONDS", default_value_t = DEFAULT_MAX_QUERY_SECONDS)]
    pub max_query_seconds: f64,
    /// Generate and score calls one query keeps in flight at once.
    #[arg(long, env = "PONDER_MAX_CALLS_PER_QUERY", default_value_t = ponder_search::limits::DEFAULT_CALLS_IN_FLIGHT)]
    pub max_calls_per_query: u32,
}

pub const DEFAULT_MAX_GENERATIONS: u32 = 256;
pub const DEFAULT_MAX_ROUNDS: u32 = 100;
pub const DEFAULT_MAX_QUERY_SECONDS: f64 = 120.0;

impl Default for LimitArgs {
    fn default() -> Self {
        Self {
            max_generations: DEFAULT_MAX_GENERATIONS,
            max_rounds: DEFAULT_MAX_ROUNDS,
            max_query_seconds: DEFAULT_MAX_QUERY_SECONDS,
            max_calls_per_query: ponder_search::limits::DEFAULT_CALLS_IN_FLIGHT,
        }
    }
}

impl LimitArgs {
    /// The caps as the search applies them; an error names the flag to fix.
    pub fn query_limits(&self) -> anyhow::Result<QueryLimits> {
        let s = self.max_query_seconds;
        anyhow::ensure!(
            s.is_finite() && (0.0..=86_400.0).contains(&s),
            "--max-query-seconds must be 0 (no cap) or a number of seconds up to one day, got {s}"
        );
        let limits = QueryLimits {
            max_generations: self.max_generations,
            max_rounds: self.max_rounds,
            max_calls_in_flight: self.max_calls_per_query,
            max_time: (s > 0.0).then(|| std::time::Duration::from_secs_f64(s)),
        };
        limits.check().map_err(anyhow::Error::msg)?;
        Ok(limits)
    }
}

impl OrchestratorArgs {
    pub fn new(node: NodeArgs) -> Self {
        Self {
            node,
            generators: vec![],
            verifiers: vec![],
            format: None,
            policy: None,
            default_model: None,
            default_generations: request::DEFAULT_GENERATIONS,
            max_queries: 64,
            max_queries_per_client: DEFAULT_MAX_QUERIES_PER_CLIENT,
            max_calls_per_client: 0,
            limits: LimitArgs::default(),
            expect_model: vec![],
            allow_recorded: false,
            affinity: true,
            hedging: true,
            status_addresses: false,
            access: AccessArgs::default(),
            control: Default::default(),
            gateway: Default::default(),
        }
    }
}

pub struct OrchestratorNode {
    pub node: Node,
    pub registry: Registry,
    /// The HTTP gateway, when `--gateway-addr` is set.
    pub gateway: Option<gateway::Gateway>,
    discovery: tokio::task::JoinHandle<()>,
    /// Keeps health NOT_SERVING while no generator is ready.
    readiness: tokio::task::JoinHandle<()>,
    /// Keeps `ponder_members` current.
    member_gauges: tokio::task::JoinHandle<()>,
    /// The budget controller's load readings.
    control: tokio::task::JoinHandle<()>,
}

impl OrchestratorNode {
    pub fn stop(self) -> BoxedFuture<'static, ()> {
        Box::pin(async move {
            if let Some(g) = &self.gateway {
                g.stop();
            }
            self.readiness.abort();
            self.member_gauges.abort();
            self.control.abort();
            self.discovery.abort();
            self.node.stop().await;
        })
    }
}

/// Follows membership: health is SERVING while at least one generator is ready and
/// NOT_SERVING while none is (a query could only fail), so load balancers and probes
/// stop sending work to an orchestrator that has lost its generators.
fn follow_readiness(
    registry: &Registry,
    health: tonic_health::server::HealthReporter,
) -> tokio::task::JoinHandle<()> {
    let mut snapshots = registry.subscribe();
    tokio::spawn(async move {
        let mut serving = true;
        loop {
            let ready = snapshots.borrow_and_update().ready(Role::Generator) > 0;
            if ready != serving {
                serving = ready;
                let status = if ready {
                    tonic_health::ServingStatus::Serving
                } else {
                    tracing::warn!("no generator is ready; NOT_SERVING until one is");
                    tonic_health::ServingStatus::NotServing
                };
                for service in ["", SERVICE_NAME] {
                    health.set_service_status(service, status).await;
                }
            }
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Sets `ponder_members{role,state}` every second (ejection ends with time, not with a
/// membership change, so a change subscription alone would miss it).
fn count_members(registry: &Registry, metrics: Metrics) -> tokio::task::JoinHandle<()> {
    let registry = registry.clone();
    tokio::spawn(async move {
        loop {
            let members = registry.all();
            for role in [Role::Generator, Role::Verifier] {
                let of_role = members.iter().filter(|m| m.record.role == role);
                let mut counts = [("ready", 0i64), ("ejected", 0), ("connecting", 0)];
                for m in of_role {
                    let i = match (m.info.get().is_some(), m.is_ejected()) {
                        (true, false) => 0,
                        (true, true) => 1,
                        (false, _) => 2,
                    };
                    counts[i].1 += 1;
                }
                for (state, n) in counts {
                    let l = Metrics::labels(&[("role", role.as_str()), ("state", state)]);
                    metrics.members.get_or_create(&l).set(n);
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    })
}

/// Starts the orchestrator; it turns SERVING once a generator is ready.
pub fn start(
    args: OrchestratorArgs,
    metrics: Metrics,
) -> BoxedFuture<'static, anyhow::Result<OrchestratorNode>> {
    Box::pin(async move {
        // The gateway authenticates by API key only: beside a port that demands client
        // certificates it would be a way around them (docs/gateway.md, "Security").
        anyhow::ensure!(
            args.gateway.gateway_addr.is_none()
                || !args.node.tls.requires_client_certs(ClientAuth::None),
            "--gateway-addr with --tls-client-auth required: the HTTP gateway takes API keys, \
             not client certificates, so it would bypass mTLS; leave --gateway-addr unset"
        );
        let format = match &args.format {
            Some(p) => SolutionFormat::from_file(p)?,
            None => SolutionFormat::default(),
        };
        // Parsed here, once: queries only look their strategy up.
        let policy = match &args.policy {
            Some(p) => Arc::new(Policy::from_file(p)?),
            None => Policy::builtin(),
        };
        anyhow::ensure!(
            (1..=ponder_search::budget::MAX_GENERATIONS).contains(&args.default_generations),
            "--default-generations must be in 1..={}",
            ponder_search::budget::MAX_GENERATIONS
        );
        anyhow::ensure!(args.max_queries > 0, "--max-queries must be at least 1");
        let limits = args.limits.query_limits()?;
        anyhow::ensure!(
            args.default_generations <= limits.max_generations,
            "--default-generations ({}) must be at most --max-generations ({})",
            args.default_generations,
            limits.max_generations
        );
        let gate = Gate::new(&args.access, metrics.clone())?;
        let watched_peers = args.node.tls.watched_peers()?;
        let peers = watched_peers.as_ref().map(|w| (**w.value.borrow()).clone());
        match &peers {
            Some(p) if p.has_identity => {
                tracing::info!("dialing workers over mTLS, verified by the cluster CA")
            }
            Some(_) => tracing::warn!(
                "dialing workers over TLS without a client certificate (no --tls-client-cert or \
             --tls-cert): workers that require mTLS will refuse this orchestrator"
            ),
            None => {}
        }
        let mut expect = Expectations::parse(&args.expect_model)?;
        expect.allow_recorded = args.allow_recorded;
        if args.allow_recorded {
            tracing::warn!(
                "--allow-recorded: members replaying recordings are accepted (scale \
                 measurements only; their latency is modelled, not measured)"
            );
        }
        let registry = Registry::with_checks(peers, expect, Some(metrics.clone()));
        if let Some(w) = watched_peers {
            registry.follow_tls(w.value);
        }
        let (kind, discovery) = if args.node.etcd.is_empty() {
            anyhow::ensure!(
                !args.generators.is_empty(),
                "give --generators (static membership) or --etcd (discovery)"
            );
            let d = StaticDiscovery::new(&args.generators, &args.verifiers);
            (d.kind(), tokio::spawn(d.run(registry.clone())))
        } else {
            let d = EtcdDiscovery {
                etcd: EtcdConfig::new(args.node.etcd.clone(), &args.node.etcd_access)?,
                cluster: args.node.cluster.clone(),
                metrics: Some(metrics.clone()),
            };
            (d.kind(), tokio::spawn(d.run(registry.clone())))
        };
        let metrics_for_members = metrics.clone();
        let gateway_metrics = metrics.clone();
        let (controller, finished) = control::Controller::new(&args.control, &policy, &metrics)?;
        let admission = Admission::new(
            args.max_queries,
            args.max_queries_per_client,
            args.max_calls_per_client,
        );
        let control = controller.clone().run(
            registry.clone(),
            admission.clone(),
            args.control.clone(),
            finished,
        );
        let service = OrchestratorService::new(Shared {
            registry: registry.clone(),
            discovery: kind,
            cluster: args.node.cluster.clone(),
            format,
            policy,
            default_generations: args.default_generations,
            default_model: args.default_model.clone().filter(|m| !m.is_empty()),
            admission,
            controller,
            limits,
            gate: gate.clone(),
            status_addresses: args.status_addresses,
            routing: ponder_cluster::pool::Routing {
                affinity: args.affinity,
                hedging: std::sync::Arc::new(ponder_cluster::hedge::Hedging::new(args.hedging)),
                ..ponder_cluster::pool::Routing::new(
                    ponder_cluster::pool::RetryBudget::default().with_metrics(metrics.clone()),
                )
            },
            verifiers_seen: Default::default(),
            metrics,
        });
        // Only the Orchestrator service is gated: health and reflection stay open (the
        // gateway passes the same gate itself).
        let routes = tonic::service::Routes::new(OrchestratorServer::with_interceptor(
            service.clone(),
            gate.clone(),
        ));
        // The public port asks for no client certificate by default: callers use API keys.
        let mut node =
            Node::start(args.node.clone(), SERVICE_NAME, routes, ClientAuth::None).await?;
        registry
            .wait_for(None, |snap| (snap.ready(Role::Generator) > 0).then_some(()))
            .await;
        // Registered in etcd (when discovery is etcd) under the orchestrator role: never
        // routed to, but counted, so that each replica's budget controller knows how
        // many share the generators (docs/load-adaptive.md, "The capacity law").
        let record = ponder_cluster::MemberRecord {
            role: Role::Orchestrator,
            instance_id: node.instance_id("orchestrator"),
            address: node.advertised(),
            model_id: String::new(),
            capacity: args.max_queries as u32,
        };
        node.set_serving(Some(record)).await;
        let readiness = follow_readiness(&registry, node.health());
        let member_gauges = count_members(&registry, metrics_for_members);
        // Started once the orchestrator serves: its ready line means it answers.
        let gateway = match args.gateway.gateway_addr {
            Some(addr) => {
                // The public port's identity, without a client CA: a port that requires
                // client certificates refused the gateway above.
                let tls = args.node.tls.server(ClientAuth::None)?;
                Some(
                    gateway::Gateway::start(
                        &args.gateway,
                        addr,
                        tls,
                        service,
                        gate,
                        gateway_metrics,
                    )
                    .await?,
                )
            }
            None => None,
        };
        Ok(OrchestratorNode {
            node,
            registry,
            gateway,
            discovery,
            readiness,
            member_gauges,
            control,
        })
    })
}

/// The `ponder-orchestrator` binary: serve until SIGTERM/Ctrl-C.
pub fn run(args: OrchestratorArgs) -> BoxedFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        let metrics = Metrics::for_binary(&args.node, "orchestrator").await?;
        let mut o = start(args, metrics).await?;
        println!("orchestrator listening on {}", o.node.addr);
        if let Some(g) = &o.gateway {
            println!("gateway listening on {}://{}", g.scheme, g.addr);
        }
        tokio::select! {
            _ = ponder_cluster::telemetry::shutdown_signal() => {}
            r = o.node.wait() => r?,
        }
        o.stop().await;
        ponder_cluster::trace::shutdown();
        Ok(())
    })
}
