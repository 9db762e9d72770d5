//! [`Generate`] and [`Score`] over the cluster: pick a member, call it, fail over.
//!
//! Routing rules (docs/cluster.md):
//! - only members that answered ModelInfo and are not ejected are candidates; if every
//!   member is ejected, ejected ones are tried anyway (that is the recovery probe);
//! - query affinity with bounded loads: each call's `affinity` key ranks members by
//!   rendezvous hashing, so all rounds of one query prefer the same node and hit its
//!   prefix cache; a member takes the call only while its calls in flight stay within
//!   [`LOAD_BOUND`] times the mean (at least [`MIN_LOAD_CAP`]), else the next member in
//!   the key's ranking does (consistent hashing with bounded loads, Mirrokni, Thorup and
//!   Zadimoghaddam, 2018). Plain rendezvous hashing with a power-of-two-choices escape
//!   left generators at 1.2x the mean load when few distinct queries are in flight
//!   (docs/scaling.md, "Balance");
//! - with affinity off ([`Routing::affinity`], `--affinity false`): plain power of two
//!   choices (the less loaded of two random members), the baseline affinity is measured
//!   against;
//! - when no member is left to try, a call waits up to [`MEMBER_WAIT`] (within its
//!   deadline) for one to join, so replacing the only node of a role loses no query;
//! - a failed call (unavailable, internal, transport error) ejects the member with
//!   exponential backoff and is retried on another member; requests are seeded, so the
//!   retried call returns the same samples. Invalid requests and deadlines are not
//!   retried. A call whose connection was refused never reached its member, and does
//!   not count toward [`MAX_ATTEMPTS`]: when many nodes die at once (a SIGKILL storm),
//!   their registrations linger until their leases expire, and a call could otherwise
//!   spend all its attempts on dead addresses;
//! - a member at its queue limit (RESOURCE_EXHAUSTED) is backpressure: the call moves
//!   on to another member without ejecting it, and when all are busy it backs off and
//!   tries again (a full queue never reads as a missing member);
//! - retries spend a [`RetryBudget`] shared by all queries of an orchestrator (every
//!   first attempt deposits, every retry withdraws), so when a large part of the
//!   cluster fails, failed calls are not multiplied into a retry storm.

use crate::hedge::Hedging;
use crate::member::{InFlight, Member, Role};
use crate::membership::{PerSnapshot, Registry, Snapshot};
use crate::metrics::{CounterFamily, Metrics};
use crate::request_id;
use crate::status::from_status;
use crate::wire;
use ponder_proto::v1 as pb;
use ponder_proto::v1::generator_client::GeneratorClient;
use ponder_proto::v1::verifier_client::VerifierClient;
use ponder_search::traits::{GeneratorLimits, VerifierCost};
use ponder_search::{
    GenOutput, GenRequest, Generate, Result, Score, ScoreOutput, ScoreRequest, SearchError,
};
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::retry::budget::{Budget, TpsBudget};
use tracing::Instrument;

/// How far above the mean calls in flight a member may go and still take a call that
/// ranks it first.
pub const LOAD_BOUND: f64 = 1.25;
/// The bound's floor: with few calls in flight, a member may always hold this many, so
/// that a query's overlapping calls stay together on an idle cluster.
pub const MIN_LOAD_CAP: u32 = 2;
/// Members tried per call.
pub const MAX_ATTEMPTS: usize = 3;
/// Samples per Generate call of a node that does not say (ModelInfo from before
/// `max_samples_per_request`): the engine's fixed limit then.
pub const DEFAULT_MAX_SAMPLES: u32 = 256;

/// The orchestrator-wide allowance for retries: tower's token-bucket budget. It also
/// carries the orchestrator's metrics, since every pool of every query shares it: the
/// retries it allows and the ejections that cause them are counted there.
#[derive(Clone)]
pub struct RetryBudget {
    budget: Arc<TpsBudget>,
    metrics: Option<Metrics>,
    /// The series of `ponder_affinity_routes_total` by role (generator, verifier) and
    /// result (preferred, other), looked up once: every call counts one.
    affinity_routes: Option<Arc<[[Counter; 2]; 2]>>,
}

impl RetryBudget {
    /// Retries may add `percent` of recent calls (over 10 s), plus `min_per_sec`.
    pub fn new(min_per_sec: u32, percent: f32) -> Self {
        Self {
            budget: Arc::new(TpsBudget::new(
                Duration::from_secs(10),
                min_per_sec,
                percent,
            )),
            metrics: None,
            affinity_routes: None,
        }
    }

    /// Counts retries (`ponder_retries_total`) and ejections (`ponder_ejections_total`)
    /// in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        let series = |role: Role, result: &str| {
            metrics
                .affinity_routes
                .get_or_create(&Metrics::labels(&[
                    ("role", role.as_str()),
                    ("result", result),
                ]))
                .clone()
        };
        self.affinity_routes =
            Some(Arc::new([Role::Generator, Role::Verifier].map(|role| {
                [series(role, "preferred"), series(role, "other")]
            })));
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, family: fn(&Metrics) -> &CounterFamily, role: Role) {
        if let Some(m) = &self.metrics {
            family(m)
                .get_or_create(&Metrics::labels(&[("role", role.as_str())]))
                .inc();
        }
    }

    /// Counts a hedged call in `ponder_hedges_total` by `result`: `won` (the copy
    /// answered first), `lost` (the first call did), `failed` (neither answered).
    fn count_hedge(&self, role: Role, result: &str) {
        if let Some(m) = &self.metrics {
            m.hedges
                .get_or_create(&Metrics::labels(&[
                    ("role", role.as_str()),
                    ("result", result),
                ]))
                .inc();
        }
    }

    /// Counts a first attempt in `ponder_affinity_routes_total`: whether it went to the
    /// member its key ranks first ([`Routed::preferred`]; with affinity off too, so
    /// that the two modes compare).
    fn count_affinity(&self, role: Role, preferred: bool) {
        let Some(series) = &self.affinity_routes else {
            return;
        };
        let by_role = match role {
            Role::Generator => &series[0],
            Role::Verifier => &series[1],
            Role::Orchestrator => return, // never routed to
        };
        by_role[usize::from(!preferred)].inc();
    }
}

/// What every pool of one orchestrator shares: the retry budget, and whether calls
/// follow their query's affinity key.
#[derive(Clone)]
pub struct Routing {
    pub retries: RetryBudget,
    /// Rank members by each call's affinity key (on by default); off: random preference.
    pub affinity: bool,
    /// Hedged calls and the latencies they are timed by (on by default).
    pub hedging: Arc<Hedging>,
}

impl Routing {
    /// Affinity and hedging on, and `retries`.
    pub fn new(retries: RetryBudget) -> Self {
        Self {
            retries,
            affinity: true,
            hedging: Arc::default(),
        }
    }
}

impl Default for RetryBudget {
    /// 20% of recent calls plus 10 retries a second.
    fn default() -> Self {
        Self::new(10, 0.2)
    }
}

/// A member picked for a call.
pub struct Routed {
    pub member: Arc<Member>,
    /// Whether it is the candidate the call's key ranks first (what affinity aims for).
    pub preferred: bool,
}

/// Runs one call to `m`, counted in its calls in flight, and times it.
async fn timed<T>(
    m: Arc<Member>,
    call: impl std::future::Future<Output = std::result::Result<T, CallFailure>>,
) -> (Arc<Member>, Duration, std::result::Result<T, CallFailure>) {
    let guard = InFlight::new(m.clone());
    let started = Instant::now();
    let res = call.await;
    drop(guard);
    (m, started.elapsed(), res)
}

/// Picks a member for a call (see the module docs). `key`: the call's affinity key;
/// `affinity`: rank by it (false: power of two choices, the key only tells whether the
/// pick happens to be its first-ranked member); `exclude`: already tried; `fits`:
/// whether a member's limits let it serve this call.
pub fn route(
    members: &[Arc<Member>],
    key: u64,
    affinity: bool,
    exclude: &[Arc<Member>],
    fits: &(dyn Fn(&pb::ModelInfoResponse) -> bool + Sync),
) -> Option<Routed> {
    let mut pool: Vec<&Arc<Member>> = members
        .iter()
        .filter(|m| m.info.get().is_some_and(fits) && !exclude.iter().any(|x| Arc::ptr_eq(x, m)))
        .collect();
    // Healthy members only, unless every candidate is ejected (the recovery probe).
    if pool.iter().any(|m| !m.is_ejected()) {
        pool.retain(|m| !m.is_ejected());
    }
    if pool.is_empty() {
        return None;
    }
    let load = |m: &Member| m.in_flight.load(std::sync::atomic::Ordering::Relaxed);
    let (chosen, first) = if affinity {
        // Each member's cap: LOAD_BOUND times the mean load with this call counted.
        // The caps sum to at least the calls in flight plus this one, so some member
        // always has room.
        let total: u32 = pool.iter().map(|m| load(m)).sum();
        let cap = ((f64::from(total + 1) * LOAD_BOUND / pool.len() as f64).ceil() as u32)
            .max(MIN_LOAD_CAP);
        pool.sort_unstable_by_key(|m| std::cmp::Reverse(rendezvous_rank(key, m)));
        let first = pool[0];
        (
            pool.iter()
                .copied()
                .find(|m| load(m) < cap)
                .unwrap_or(first),
            first,
        )
    } else {
        // Power of two choices: the less loaded of two random members.
        let mut rng = rand::rng();
        let a = pool[rng.random_range(0..pool.len())];
        let b = pool[rng.random_range(0..pool.len())];
        let first = pool.iter().copied().max_by_key(|m| rendezvous_rank(key, m));
        (if load(b) < load(a) { b } else { a }, first.unwrap_or(a))
    };
    Some(Routed {
        member: chosen.clone(),
        preferred: Arc::ptr_eq(chosen, first),
    })
}

/// Rendezvous hashing: a member's rank for a key (the highest ranked is preferred).
fn rendezvous_rank(key: u64, m: &Member) -> u64 {
    ponder_search::solve::wave_seed(key, m.id_hash)
}

/// A call's gRPC request: its deadline, request id, tenant and, when traces are
/// exported, the trace context of `span` (the call's span).
fn request_with<T>(
    msg: T,
    deadline: Option<Instant>,
    id: &str,
    tenant: u64,
    span: &tracing::Span,
) -> Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(msg);
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SearchError::DeadlineExceeded(
                "the query's deadline passed".into(),
            ));
        }
        req.set_timeout(left);
    }
    request_id::insert(req.metadata_mut(), id);
    crate::tenant::insert(req.metadata_mut(), tenant);
    crate::trace::inject(span, req.metadata_mut());
    Ok(req)
}

/// How long a call waits for a member of its role to appear when none is left to try
/// (e.g. the only verifier died and its replacement is starting), unless the query's
/// deadline comes first.
pub const MEMBER_WAIT: Duration = Duration::from_secs(15);

/// When a query stops waiting for a member to join: [`MEMBER_WAIT`] from now, or its
/// deadline if that comes first.
pub fn member_wait_deadline(deadline: Option<Instant>) -> Instant {
    let give_up = Instant::now() + MEMBER_WAIT;
    deadline.map_or(give_up, |d| d.min(give_up))
}

/// Rounds of backoff a call waits through while every member it could use is at its
/// queue limit, before it gives up with RESOURCE_EXHAUSTED (about 6 s in all).
pub const MAX_OVERLOAD_ROUNDS: u32 = 10;

/// The pause before overload round `round` (1-based): 25 ms doubling up to 1 s, with
/// up to 50% random jitter so that waiting calls do not come back in step.
fn overload_backoff(round: u32) -> Duration {
    let base =
        Duration::from_millis(25 << round.saturating_sub(1).min(6)).min(Duration::from_secs(1));
    base.mul_f64(1.0 + rand::rng().random_range(0.0..0.5))
}

/// Why a call to one member failed, and whether the member ever saw it.
struct CallFailure {
    error: SearchError,
    /// False when the connection was refused: nothing was sent, so trying another
    /// member is not a second attempt at the work.
    reached: bool,
}

impl From<SearchError> for CallFailure {
    fn from(error: SearchError) -> Self {
        Self {
            error,
            reached: true,
        }
    }
}

impl From<tonic::Status> for CallFailure {
    fn from(s: tonic::Status) -> Self {
        Self {
            reached: !connection_refused(&s),
            error: from_status(&s),
        }
    }
}

/// Whether `s` comes from a refused TCP connection (its source chain holds an
/// `io::Error` of kind ConnectionRefused).
fn connection_refused(s: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Runs `call` on up to [`MAX_ATTEMPTS`] members of `role` with failover.
///
/// A member at its queue limit (RESOURCE_EXHAUSTED) is backpressure, not a failure: it
/// is neither ejected nor counted as an attempt. The call moves on to another member,
/// and when every member it could use is busy it waits ([`overload_backoff`]) and tries
/// them again, for up to [`MAX_OVERLOAD_ROUNDS`] rounds within the deadline. A refused
/// connection ejects its member but is not counted as an attempt either; such retries
/// are bounded by the members there are (each is tried once) and by the retry budget.
#[allow(clippy::too_many_arguments)]
async fn with_failover<T, F, Fut>(
    registry: &Registry,
    routing: &Routing,
    role: Role,
    affinity: u64,
    deadline: Option<Instant>,
    fits: &(dyn Fn(&pb::ModelInfoResponse) -> bool + Sync),
    mut call: F,
) -> Result<T>
where
    F: FnMut(Arc<Member>) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, CallFailure>>,
{
    // Members are told apart by registration, not instance id: a node that restarts
    // under the same id (a rolling restart, a pod rescheduled) is a new member that a
    // call which failed on its predecessor may use.
    let mut failed: Vec<Arc<Member>> = Vec::new();
    let mut attempts = 0;
    let mut busy: Vec<Arc<Member>> = Vec::new();
    let mut overload_rounds = 0;
    let mut last: Option<SearchError> = None;
    let retries = &routing.retries;
    let route = |members: &[Arc<Member>], exclude: &[Arc<Member>]| {
        route(members, affinity, routing.affinity, exclude, fits)
    };
    retries.budget.deposit();
    while attempts < MAX_ATTEMPTS {
        let skip: Vec<Arc<Member>> = failed.iter().chain(&busy).cloned().collect();
        let m = match route(registry.snapshot().members(role), &skip) {
            Some(routed) => {
                if failed.is_empty() && busy.is_empty() && overload_rounds == 0 {
                    retries.count_affinity(role, routed.preferred);
                }
                routed.member
            }
            None if !busy.is_empty() => {
                overload_rounds += 1;
                if overload_rounds > MAX_OVERLOAD_ROUNDS {
                    break;
                }
                let pause = overload_backoff(overload_rounds);
                if deadline.is_some_and(|d| Instant::now() + pause >= d) {
                    return Err(SearchError::DeadlineExceeded(format!(
                        "every {} was busy until the query's deadline",
                        role.as_str()
                    )));
                }
                tokio::time::sleep(pause).await;
                busy.clear();
                continue;
            }
            None => match registry
                .wait_for(Some(member_wait_deadline(deadline)), |snap| {
                    route(snap.members(role), &failed).map(|r| r.member)
                })
                .await
            {
                Some(m) => m,
                None => break,
            },
        };
        if !failed.is_empty() {
            if !retries.budget.withdraw() {
                tracing::warn!(role = role.as_str(), "retry budget spent; not retrying");
                break;
            }
            retries.count(|m| &m.retries, role);
        }
        let first = timed(m.clone(), call(m.clone()));
        let delay = routing.hedging.delay(role);
        let hedge = || {
            // Slower than most calls of its role: a copy goes to the next member routing
            // would pick, if there is one and the retry budget allows.
            let mut others = skip.clone();
            others.push(m.clone());
            let h = route(registry.snapshot().members(role), &others)
                .map(|r| r.member)
                .filter(|_| retries.budget.withdraw())?;
            Some(timed(h.clone(), call(h)))
        };
        let raced = crate::hedge::race(first, delay, hedge, |o| o.2.is_ok()).await;
        if raced.hedged {
            let result = match raced.outcomes.iter().find(|o| o.2.is_ok()) {
                Some(o) if Arc::ptr_eq(&o.0, &m) => "lost",
                Some(_) => "won",
                None => "failed",
            };
            retries.count_hedge(role, result);
            if result == "won" && m.record_outpaced() {
                m.record_failure();
                retries.count(|m| &m.ejections, role);
                tracing::warn!(
                    role = role.as_str(),
                    instance = %m.record.instance_id,
                    "member slower than hedged copies on others; ejected"
                );
            }
        }
        for (m, took, res) in raced.outcomes {
            match res {
                Ok(v) => {
                    m.record_success();
                    routing.hedging.record(role, took);
                    return Ok(v);
                }
                Err(CallFailure { error: e, reached }) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(SearchError::DeadlineExceeded(format!(
                            "the query's deadline passed during a call to {}",
                            m.record.instance_id
                        )));
                    }
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    if matches!(e, SearchError::Overloaded(_)) {
                        tracing::debug!(
                            role = role.as_str(),
                            instance = %m.record.instance_id,
                            "member busy; backing off"
                        );
                        busy.push(m.clone());
                    } else {
                        m.record_failure();
                        retries.count(|m| &m.ejections, role);
                        failed.push(m.clone());
                        attempts += usize::from(reached);
                        tracing::warn!(
                            role = role.as_str(),
                            instance = %m.record.instance_id,
                            error = %e,
                            "call failed; trying another member"
                        );
                    }
                    last = Some(e);
                }
            }
        }
    }
    Err(last
        .unwrap_or_else(|| SearchError::Unavailable(format!("no {} is available", role.as_str()))))
}

/// The generator members of a registry as one [`Generate`]: all of them, or those of
/// one model ([`GeneratorPool::for_model`]).
#[derive(Clone)]
pub struct GeneratorPool {
    registry: Registry,
    routing: Routing,
    /// Only members whose ModelInfo names this model (None: every member).
    model: Option<String>,
    /// [`GeneratorPool::agreed_limits`] of the latest snapshot (read several times a call).
    limits: Arc<PerSnapshot<Option<GeneratorLimits>>>,
}

impl GeneratorPool {
    pub fn new(registry: Registry, routing: Routing) -> Self {
        Self {
            registry,
            routing,
            model: None,
            limits: Arc::default(),
        }
    }

    /// The members serving `model_id` (docs/cluster.md, "Several models").
    pub fn for_model(registry: Registry, routing: Routing, model_id: &str) -> Self {
        Self {
            registry,
            routing,
            model: Some(model_id.to_string()),
            limits: Arc::default(),
        }
    }

    fn serves(&self, info: &pb::ModelInfoResponse) -> bool {
        self.model.as_deref().is_none_or(|m| info.model_id == m)
    }

    /// The limits of [`Generate::limits`]; None while no member of the pool is ready.
    fn agreed_limits(&self) -> Option<GeneratorLimits> {
        self.limits
            .get(&self.registry.snapshot(), |snap| self.limits_of(snap))
    }

    fn limits_of(&self, snapshot: &Snapshot) -> Option<GeneratorLimits> {
        let infos: Vec<&pb::ModelInfoResponse> = snapshot
            .members(Role::Generator)
            .iter()
            .filter_map(|m| m.info.get().filter(|i| self.serves(i)))
            .collect();
        Some(GeneratorLimits {
            max_token_bytes: agreed(infos.iter().map(|i| i.max_token_bytes), Tie::Larger)?.max(1),
            context_length: agreed(infos.iter().map(|i| i.context_length), Tie::Smaller)?,
            max_samples: agreed(infos.iter().copied().map(max_samples), Tie::Smaller)?,
            // FLOPs are reserved by this count: a member with more parameters would spend
            // past the reservation, so it does not serve (see `generate`).
            parameters: agreed(infos.iter().map(|i| i.parameters), Tie::Larger)?,
        })
    }
}

impl Generate for GeneratorPool {
    async fn generate(&self, req: GenRequest) -> Result<GenOutput> {
        let msg = wire::gen_request_to_pb(&req);
        // The call was planned with the pool's limits: only members whose own limits
        // are at least those may serve it. (A call that is too big for the pool's limits
        // still goes to a member, whose INVALID_ARGUMENT says what to fix.)
        // With no member ready when the call was made (every one of them restarting),
        // the bound is what the members ready when it is routed agree on; with the
        // fallback defaults no real member would ever fit.
        let planned = self.agreed_limits();
        let fits = |i: &pb::ModelInfoResponse| {
            let limits = planned.unwrap_or_else(|| self.limits());
            self.serves(i)
                && i.context_length >= limits.context_length
                && max_samples(i) >= limits.max_samples
                && i.max_token_bytes <= limits.max_token_bytes
                && i.parameters <= limits.parameters
        };
        with_failover(
            &self.registry,
            &self.routing,
            Role::Generator,
            req.affinity,
            req.deadline,
            &fits,
            |m| {
                let msg = msg.clone();
                let (deadline, id, tenant) = (req.deadline, req.request_id.clone(), req.tenant);
                let span = tracing::info_span!(
                    "generate",
                    member = %m.record.instance_id,
                    samples = msg.n,
                );
                async move {
                    let r = request_with(msg, deadline, &id, tenant, &tracing::Span::current())?;
                    let resp = GeneratorClient::new(m.calls()).generate(r).await?;
                    m.record_queue_report(resp.metadata());
                    let parameters = m.info.get().map_or(0, |i| i.parameters);
                    Ok(wire::gen_output_from_pb(resp.into_inner(), parameters))
                }
                .instrument(span)
            },
        )
        .await
    }

    /// The limits most ready members report (ties: the conservative value), so that one
    /// outlier cannot shrink every query (a member reporting `context_length: 1`);
    /// calls go only to members whose own limits hold for them (see `generate`).
    fn limits(&self) -> GeneratorLimits {
        self.agreed_limits().unwrap_or(GeneratorLimits {
            max_token_bytes: 32,
            context_length: 2048,
            max_samples: DEFAULT_MAX_SAMPLES,
            parameters: 0,
        })
    }
}

/// A generator's samples-per-call limit (0, from a node before the field: the default).
fn max_samples(info: &pb::ModelInfoResponse) -> u32 {
    match info.max_samples_per_request {
        0 => DEFAULT_MAX_SAMPLES,
        n => n,
    }
}

/// Which of two equally common values [`agreed`] picks.
#[derive(Clone, Copy)]
enum Tie {
    Smaller,
    Larger,
}

/// The value most of `values` have; among equally common ones the smaller or larger
/// (the conservative side for that limit). None when there are none.
fn agreed<T: Ord + Copy>(values: impl Iterator<Item = T>, tie: Tie) -> Option<T> {
    let mut counts: std::collections::BTreeMap<T, usize> = std::collections::BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let best = counts.values().copied().max()?;
    let mut common = counts
        .into_iter()
        .filter(|&(_, c)| c == best)
        .map(|(v, _)| v);
    match tie {
        Tie::Smaller => common.next(),
        Tie::Larger => common.last(),
    }
}

/// The verifier members of a registry as one [`Score`].
#[derive(Clone)]
pub struct VerifierPool {
    registry: Registry,
    routing: Routing,
    /// [`VerifierPool::agreed_cost`] of the latest snapshot.
    cost: Arc<PerSnapshot<Option<VerifierCost>>>,
}

impl VerifierPool {
    pub fn new(registry: Registry, routing: Routing) -> Self {
        Self {
            registry,
            routing,
            cost: Arc::default(),
        }
    }

    /// The cost of [`Score::cost`]; None while no verifier is ready.
    fn agreed_cost(&self) -> Option<VerifierCost> {
        self.cost.get(&self.registry.snapshot(), cost_of_members)
    }
}

/// The verifier cost most of `snapshot`'s ready verifiers report (ties: the larger).
fn cost_of_members(snapshot: &Snapshot) -> Option<VerifierCost> {
    let costs: Vec<VerifierCost> = snapshot
        .members(Role::Verifier)
        .iter()
        .filter_map(|m| m.info.get().map(cost_of))
        .collect();
    Some(VerifierCost {
        prompt_overhead: agreed(costs.iter().map(|c| c.prompt_overhead), Tie::Larger)?,
        step_overhead: agreed(costs.iter().map(|c| c.step_overhead), Tie::Larger)?,
        parameters: agreed(costs.iter().map(|c| c.parameters), Tie::Larger)?,
    })
}

/// Per-step overheads a verifier publishes in ModelInfo, as `model_id` suffix-free
/// fields: see `ModelInfoResponse.prm_prompt_overhead` / `prm_step_overhead`.
fn cost_of(info: &pb::ModelInfoResponse) -> VerifierCost {
    VerifierCost {
        prompt_overhead: info.prm_prompt_overhead,
        step_overhead: info.prm_step_overhead,
        parameters: info.parameters,
    }
}

impl Score for VerifierPool {
    async fn score(&self, req: ScoreRequest) -> Result<ScoreOutput> {
        let msg = wire::score_request_to_pb(&req);
        let candidates = req.candidates.len();
        // The search reserved tokens by the pool's cost bound: only members whose own
        // overheads stay within it may serve the call.
        // No member ready when the call was made (the only verifier is restarting): the
        // bound is the one agreed when the call is routed (see `GeneratorPool::generate`).
        let planned = self.agreed_cost();
        let fits = |i: &pb::ModelInfoResponse| {
            let cost = planned.unwrap_or_else(|| self.cost());
            i.prm_prompt_overhead <= cost.prompt_overhead
                && i.prm_step_overhead <= cost.step_overhead
                && i.parameters <= cost.parameters
        };
        with_failover(
            &self.registry,
            &self.routing,
            Role::Verifier,
            req.affinity,
            req.deadline,
            &fits,
            |m| {
                let msg = msg.clone();
                let (deadline, id, tenant) = (req.deadline, req.request_id.clone(), req.tenant);
                let span = tracing::info_span!(
                    "score",
                    member = %m.record.instance_id,
                    candidates,
                );
                async move {
                    let r = request_with(msg, deadline, &id, tenant, &tracing::Span::current())?;
                    let resp = VerifierClient::new(m.calls()).score(r).await?;
                    m.record_queue_report(resp.metadata());
                    let parameters = m.info.get().map_or(0, |i| i.parameters);
                    Ok(wire::score_output_from_pb(
                        resp.into_inner(),
                        candidates,
                        parameters,
                    )?)
                }
                .instrument(span)
            },
        )
        .await
    }

    /// The overheads most ready members report (ties: the larger), so that one member
    /// reporting a huge overhead cannot make every verifier budget look spent; calls go
    /// only to members within this bound (see `score`).
    fn cost(&self) -> VerifierCost {
        self.agreed_cost().unwrap_or(VerifierCost {
            prompt_overhead: 64,
            step_overhead: 16,
            parameters: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MemberRecord;

    #[test]
    fn the_agreed_limit_is_the_common_one_and_a_tie_goes_to_the_safe_side() {
        // Three honest members and one outlier: the outlier does not set the limit.
        assert_eq!(
            agreed([2048, 2048, 1, 2048].into_iter(), Tie::Smaller),
            Some(2048)
        );
        assert_eq!(agreed([16, 16, 1 << 20].into_iter(), Tie::Larger), Some(16));
        // One against one: the conservative side.
        assert_eq!(agreed([2048, 1].into_iter(), Tie::Smaller), Some(1));
        assert_eq!(agreed([16, 64].into_iter(), Tie::Larger), Some(64));
        assert_eq!(agreed(std::iter::empty::<u32>(), Tie::Smaller), None);
    }

    fn ready_member(id: &str, address: &str) -> Arc<Member> {
        let m = Member::new(
            MemberRecord {
                role: Role::Verifier,
                instance_id: id.into(),
                address: address.into(),
                model_id: "arith-prm".into(),
                capacity: 8,
            },
            None,
        )
        .unwrap();
        m.info.set(pb::ModelInfoResponse::default()).unwrap();
        Arc::new(m)
    }

    #[tokio::test]
    async fn a_member_restarted_under_the_same_id_is_not_excluded_with_its_predecessor() {
        // The call failed on verifier-1; verifier-1 restarts on a new port. The call's
        // retry must reach the new registration (the CI chaos run once lost a query
        // here: it waited for a verifier while the only one was the restarted one).
        let old = ready_member("verifier-1", "127.0.0.1:1");
        let new = ready_member("verifier-1", "127.0.0.1:2");
        let any = |_: &pb::ModelInfoResponse| true;
        let tried = std::slice::from_ref(&old);
        let picked = route(std::slice::from_ref(&new), 7, true, tried, &any).expect("routable");
        assert!(Arc::ptr_eq(&picked.member, &new));
        assert!(route(tried, 7, true, tried, &any).is_none());
    }

    fn four_ready_members() -> Vec<Arc<Member>> {
        (0..4)
            .map(|i| ready_member(&format!("verifier-{i}"), &format!("127.0.0.1:{}", i + 1)))
            .collect()
    }

    /// The member `route` picks among `members` (none excluded, all fit) for `key`, with
    /// affinity on (Some) or off (None).
    fn pick(members: &[Arc<Member>], key: Option<u64>) -> Arc<Member> {
        let any = |_: &pb::ModelInfoResponse| true;
        route(members, key.unwrap_or(0), key.is_some(), &[], &any)
            .expect("routable")
            .member
    }

    #[tokio::test]
    async fn affinity_keeps_a_key_on_one_member_and_without_it_calls_spread() {
        let members = four_ready_members();
        let picks = |key: Option<u64>| -> std::collections::HashSet<String> {
            (0..200)
                .map(|_| pick(&members, key).record.instance_id.clone())
                .collect()
        };
        // Idle members: the key's preferred member always wins.
        assert_eq!(picks(Some(42)).len(), 1);
        // Different keys prefer different members.
        let spread: std::collections::HashSet<_> = (0..64u64)
            .map(|k| pick(&members, Some(k)).record.instance_id.clone())
            .collect();
        assert_eq!(spread.len(), 4);
        // No key: every member is picked sooner or later.
        assert_eq!(picks(None).len(), 4);
    }

    #[tokio::test]
    async fn a_member_over_the_load_bound_passes_the_call_to_the_next_in_the_ranking() {
        let members = four_ready_members();
        let any = |_: &pb::ModelInfoResponse| true;
        let first = route(&members, 42, true, &[], &any).unwrap();
        assert!(first.preferred);
        let preferred = first.member;
        let set = |m: &Member, n: u32| m.in_flight.store(n, std::sync::atomic::Ordering::Relaxed);
        // Within the bound (8 in flight over 4 members: cap ceil(9 * 1.25 / 4) = 3):
        // the key's member keeps its calls.
        for m in &members {
            set(m, 2);
        }
        assert!(Arc::ptr_eq(&pick(&members, Some(42)), &preferred));
        // Past it: the next member in the key's ranking, always the same one.
        set(&preferred, 6);
        let moved = route(&members, 42, true, &[], &any).unwrap();
        assert!(!moved.preferred);
        let next = moved.member;
        assert!(!Arc::ptr_eq(&next, &preferred));
        for _ in 0..20 {
            assert!(Arc::ptr_eq(&pick(&members, Some(42)), &next));
        }
        // No key: power of two choices; the busiest member wins only when both random
        // draws land on it (1 call in 16).
        for m in &members {
            set(m, 0);
        }
        set(&preferred, 9);
        let busiest = (0..400)
            .filter(|_| Arc::ptr_eq(&pick(&members, None), &preferred))
            .count();
        assert!(
            busiest < 60,
            "the busiest member took {busiest} of 400 calls"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_told_apart_from_a_failed_call() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is closed: connecting is refused.
        let conn = crate::member_conn::MemberConn::new(&format!("127.0.0.1:{port}"), None).unwrap();
        let refused = GeneratorClient::new(conn)
            .model_info(pb::ModelInfoRequest {})
            .await
            .unwrap_err();
        assert!(!CallFailure::from(refused.clone()).reached, "{refused:?}");
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        for reached in [
            tonic::Status::unavailable("the node is draining"),
            tonic::Status::internal("boom"),
        ] {
            assert!(CallFailure::from(reached).reached);
        }
    }
}
