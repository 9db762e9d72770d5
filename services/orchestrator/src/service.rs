//! `ponder.v1.Orchestrator`: one task per query.
//!
//! A query goes through three named steps: [`OrchestratorService::accept`] converts and
//! validates the request (the one place it is checked), [`Admission`] bounds the
//! queries in progress, and [`Shared::answer`] runs the search on the pools.
//!
//! Each query runs in its own tokio task, so a slow query never blocks another and a
//! panic in one could not take the server down. The task is aborted when the handler
//! is dropped (the client cancelled or went away), which drops its in-flight
//! generate/score calls and so cancels them on the nodes.

use crate::access::{refusal, Caller, Gate};
use crate::admission::Admission;
use crate::control::Controller;
use crate::request::{self, Answer};
use ponder_cluster::metrics::{code_name, code_of, Metrics};
use ponder_cluster::models::{self, ModelChoice, NoModel};
use ponder_cluster::pool::member_wait_deadline;
use ponder_cluster::status::to_status;
use ponder_cluster::{request_id, GeneratorPool, Registry, Role, VerifierPool};
use ponder_proto::v1 as pb;
use ponder_proto::v1::orchestrator_server::Orchestrator;
use ponder_search::solve::{solve_query_on, Query};
use ponder_search::strategy::compute_optimal::Policy;
use ponder_search::strategy::StrategyKind;
use ponder_search::{Generators, Model, Outcome, Progress, QueryLimits, SolutionFormat};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

pub struct Shared {
    pub registry: Registry,
    pub discovery: &'static str,
    pub cluster: String,
    pub format: SolutionFormat,
    /// The compute-optimal policy, its strategies parsed once at start-up.
    pub policy: Arc<Policy>,
    pub default_generations: u32,
    /// The generator model a query that pins none runs on (`--default-model`).
    pub default_model: Option<String>,
    pub admission: Admission,
    /// Grants adaptive budgets (docs/load-adaptive.md).
    pub controller: Arc<Controller>,
    /// The operator's caps on one query.
    pub limits: QueryLimits,
    /// The access gate, for charging a query's budget to its client's generation bucket.
    pub gate: Gate,
    /// ClusterStatus shows members' addresses (`--status-addresses`).
    pub status_addresses: bool,
    /// Shared by every query's pools: retries stay a bounded share of all calls, and
    /// whether calls follow their query's affinity key (`--affinity`).
    pub routing: ponder_cluster::pool::Routing,
    /// A verifier has been a member at some point (see [`Shared::has_verifier`]).
    pub verifiers_seen: AtomicBool,
    pub metrics: Metrics,
}

#[derive(Clone)]
pub struct OrchestratorService {
    shared: Arc<Shared>,
}

/// Aborts the query's task if the RPC handler is dropped first.
struct AbortOnDrop<T>(JoinHandle<T>);

/// An admitted query: its task, and what its access-log line needs.
struct Ticket {
    task: AbortOnDrop<Result<Answer, Status>>,
    id: String,
    caller: Caller,
    started: Instant,
    /// The budget's maximum (generations), for the budget metrics.
    requested: u32,
}

impl Ticket {
    /// Waits for the query and writes its access-log line and per-client counts.
    async fn finish(&mut self, shared: &Shared) -> Result<Answer, Status> {
        let result = join(&mut self.task).await;
        shared.access_log(self, &result);
        result
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl OrchestratorService {
    pub fn new(shared: Shared) -> Self {
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Accepts, admits and spawns one query; `progress` receives its best answer so
    /// far as compute is spent. Refusals are counted by reason.
    fn spawn_query(
        &self,
        request: Request<pb::SolveRequest>,
        progress: Option<watch::Sender<Progress>>,
    ) -> Result<Ticket, Status> {
        let metrics = &self.shared.metrics;
        let (query, id) = self
            .accept(&request)
            .inspect_err(|_| refusal(metrics, "invalid_argument"))?;
        let pinned = request.get_ref().model_id.clone();
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Peer(request.remote_addr().map(|a| a.ip())));
        self.shared
            .gate
            .charge(&caller, query.budget().max_generations)?;
        let admitted = self
            .shared
            .admission
            .admit(&caller.bucket(), &caller.to_string())
            .inspect_err(|_| refusal(metrics, "admission"))?;
        let mut query = query
            .with_client_calls(admitted.client_calls())
            .with_tenant(ponder_search::solve::hash(&caller.bucket()) | 1);
        let mode = ponder_cluster::wire::budget_mode_from_pb(request.get_ref().budget_mode)
            .unwrap_or_else(|| self.shared.controller.default_mode());
        // Compute-optimal (the default strategy) spends its probes before its bin, and
        // so its grant, is known: the controller counts them in what the query costs.
        let probes = match query.strategy() {
            None | Some(StrategyKind::ComputeOptimal) => self.shared.policy.probes,
            Some(_) => 0,
        };
        let allowance =
            self.shared
                .controller
                .allowance(mode, caller.key_name(), query.budget(), probes);
        if let Some(allowance) = allowance {
            query = query.with_allowance(allowance);
        }
        let requested = query.budget().max_generations;
        let shared = self.shared.clone();
        // The query's span: the root of its trace, or a child of the client's
        // (`traceparent`); its rounds and calls are children (docs/tracing.md).
        let span = tracing::info_span!(
            "query",
            request_id = %id,
            budget = query.budget().max_generations,
            strategy = tracing::field::Empty,
            generations = tracing::field::Empty,
            tokens = tracing::field::Empty,
            flops = tracing::field::Empty,
        );
        ponder_cluster::trace::continue_from(&span, request.metadata());
        let task = tokio::spawn(
            async move {
                let _admitted = admitted;
                shared.answer(&query, &pinned, progress).await
            }
            .instrument(span),
        );
        Ok(Ticket {
            task: AbortOnDrop(task),
            id,
            caller,
            started: Instant::now(),
            requested,
        })
    }

    /// The edge: converts the wire request and validates it, once, into a [`Query`]
    /// (INVALID_ARGUMENT, saying what to fix, if it is not one). Also returns the
    /// request id.
    fn accept(&self, request: &Request<pb::SolveRequest>) -> Result<(Query, String), Status> {
        let id = request_id::from_metadata(request.metadata());
        let mut params = request::params(
            request.get_ref(),
            request::deadline(request.metadata()),
            self.shared.default_generations,
            id.clone(),
        )?;
        params.policy = Some(self.shared.policy.clone());
        params.limits = self.shared.limits;
        let query = params.validate(&self.shared.format).map_err(to_status)?;
        Ok((query, id))
    }
}

impl Shared {
    /// Runs one admitted query on the pools of its generator model (`pinned`, or the
    /// default).
    async fn answer(
        &self,
        query: &Query,
        pinned: &str,
        progress: Option<watch::Sender<Progress>>,
    ) -> Result<Answer, Status> {
        let has_verifier = self.has_verifier(query).await;
        if self.registry.snapshot().members(Role::Generator).is_empty() {
            return Err(Status::unavailable("no generator is available"));
        }
        let mut model = self.choose_model(query, pinned).await?;
        // The query's model set: the pinned model alone, or every model with a serving
        // member (compute-optimal may move the query to any; other strategies run on
        // the default, docs/cluster.md "Several models").
        // (`choose_model` picked `model` among the served ones, so it is listed.)
        let ids: Vec<String> = if pinned.is_empty() {
            models::served(&self.registry.snapshot(), Role::Generator)
                .into_iter()
                .filter(|m| m.serving > 0 || m.model_id == model.model_id)
                .map(|m| m.model_id)
                .collect()
        } else {
            vec![model.model_id.clone()]
        };
        let pools: Vec<GeneratorPool> = ids
            .iter()
            .map(|id| GeneratorPool::for_model(self.registry.clone(), self.routing.clone(), id))
            .collect();
        let set = ids
            .iter()
            .zip(&pools)
            .map(|(id, generator)| Model {
                id: id.clone(),
                generator,
            })
            .collect();
        let mut generators = Generators::new(set, &model.model_id).map_err(to_status)?;
        if !pinned.is_empty() {
            generators = generators.pinned();
        }
        let verifiers = VerifierPool::new(self.registry.clone(), self.routing.clone());
        let outcome = solve_query_on(
            &generators,
            has_verifier.then_some(&verifiers),
            &self.format,
            query,
            progress,
        )
        .await
        .map_err(to_status)?;
        model.model_id = outcome.model_id.clone();
        if let Some(d) = &outcome.decision {
            model.notes.extend(d.notes.iter().cloned());
        }
        self.record(&outcome);
        let span = tracing::Span::current();
        span.record("strategy", outcome.strategy.name());
        span.record("generations", outcome.usage.generations);
        span.record("tokens", outcome.usage.tokens());
        span.record("flops", outcome.usage.flops);
        Ok(Answer { outcome, model })
    }

    /// The query's generator model ([`models::choose`]). Members still connecting may
    /// serve the model asked for (a restart): while some are, it waits for them, within
    /// the query's deadline, before it calls a model unknown.
    async fn choose_model(&self, query: &Query, pinned: &str) -> Result<ModelChoice, Status> {
        let default = self.default_model.as_deref();
        let pick = |snap: &ponder_cluster::Snapshot| {
            models::choose(&models::served(snap, Role::Generator), pinned, default)
        };
        let snapshot = self.registry.snapshot();
        let first = pick(&snapshot);
        let connecting = snapshot.ready(Role::Generator) < snapshot.members(Role::Generator).len();
        let result = match first {
            Err(_) if connecting => {
                let deadline = member_wait_deadline(query.budget().deadline);
                self.registry
                    .wait_for(Some(deadline), |snap| pick(snap).ok())
                    .await
                    .ok_or(first.unwrap_err())
            }
            other => other,
        };
        result.map_err(|e| match e {
            NoModel::Unknown(m) => ponder_cluster::status::invalid_argument(m),
            NoModel::NoneReady => Status::unavailable(e.to_string()),
        })
    }

    /// Whether the query gets the verifier pool. Known members count even while not
    /// ready: the pools wait a little for one (a replaced node) rather than fail the
    /// query. A cluster that has had verifiers and has none right now (its only
    /// verifier is being replaced) waits for one too, within the query's deadline,
    /// when the query may need it, instead of failing or silently answering without.
    async fn has_verifier(&self, query: &Query) -> bool {
        if !self.registry.snapshot().members(Role::Verifier).is_empty() {
            self.verifiers_seen.store(true, Ordering::Relaxed);
            return true;
        }
        if self.verifiers_seen.load(Ordering::Relaxed)
            && query.strategy().is_none_or(|s| s.needs_verifier())
        {
            let deadline = member_wait_deadline(query.budget().deadline);
            let known = |snap: &ponder_cluster::Snapshot| {
                (!snap.members(Role::Verifier).is_empty()).then_some(())
            };
            return self
                .registry
                .wait_for(Some(deadline), known)
                .await
                .is_some();
        }
        false
    }

    /// One structured line per query (target `ponder::access`): request id, client (the
    /// API key's name, never the key), strategy, usage, status and latency; and the
    /// per-client counts (`ponder_client_*`). Clients are labelled by key name only
    /// ("anonymous" for an open API), so the series stay as few as the keys.
    fn access_log(&self, ticket: &Ticket, result: &Result<Answer, Status>) {
        if let Ok(a) = result {
            self.controller.finished(
                ticket.started.elapsed(),
                ticket.requested,
                a.outcome.granted,
                a.outcome.grant_reason,
            );
        }
        let code = code_of(result);
        let (strategy, model, usage) = match result {
            Ok(a) => (
                a.outcome.strategy.name(),
                a.model.model_id.as_str(),
                a.outcome.usage,
            ),
            Err(_) => ("", "", Default::default()),
        };
        tracing::info!(
            target: "ponder::access",
            request_id = %ticket.id,
            client = %ticket.caller,
            strategy,
            model,
            generations = usage.generations,
            tokens = usage.tokens(),
            code = code_name(code),
            latency_ms = ticket.started.elapsed().as_millis() as u64,
            "query"
        );
        let client = ticket.caller.key_name().unwrap_or("anonymous");
        let l = Metrics::labels(&[("client", client)]);
        let mut with_code = l.clone();
        with_code.push(("code".into(), code_name(code).into()));
        self.metrics.client_queries.get_or_create(&with_code).inc();
        self.metrics
            .client_generations
            .get_or_create(&l)
            .inc_by(u64::from(usage.generations));
        self.metrics
            .client_tokens
            .get_or_create(&l)
            .inc_by(usage.tokens());
    }

    /// Books a finished query's compute in the metrics, by strategy.
    fn record(&self, outcome: &Outcome) {
        let u = &outcome.usage;
        let l = Metrics::labels(&[("strategy", outcome.strategy.name())]);
        if outcome.partial {
            self.metrics.partial_answers.get_or_create(&l).inc();
        }
        self.metrics
            .query_generations
            .get_or_create(&l)
            .observe(u.generations as f64);
        self.metrics
            .query_tokens
            .get_or_create(&l)
            .observe(u.tokens() as f64);
    }
}

async fn join(task: &mut AbortOnDrop<Result<Answer, Status>>) -> Result<Answer, Status> {
    match (&mut task.0).await {
        Ok(r) => r,
        Err(e) if e.is_cancelled() => Err(Status::cancelled("the query was cancelled")),
        Err(e) => Err(Status::internal(format!("the query failed: {e}"))),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SolveEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Orchestrator for OrchestratorService {
    async fn solve(
        &self,
        request: Request<pb::SolveRequest>,
    ) -> Result<Response<pb::SolveResponse>, Status> {
        let timer = self.shared.metrics.start("orchestrator", "Solve");
        let result = async {
            let mut ticket = self.spawn_query(request, None)?;
            let answer = ticket.finish(&self.shared).await?;
            let mut resp = Response::new(request::response(answer, &ticket.id));
            request_id::insert(resp.metadata_mut(), &ticket.id);
            Ok(resp)
        }
        .await;
        timer.finish(code_of(&result));
        result
    }

    type SolveStreamStream = EventStream;

    async fn solve_stream(
        &self,
        request: Request<pb::SolveRequest>,
    ) -> Result<Response<Self::SolveStreamStream>, Status> {
        let timer = self.shared.metrics.start("orchestrator", "SolveStream");
        let (tx, mut rx) = watch::channel(Progress::default());
        let mut ticket = match self.spawn_query(request, Some(tx)) {
            Ok(t) => t,
            Err(e) => {
                timer.finish(e.code());
                return Err(e);
            }
        };
        let id = ticket.id.clone();
        let shared = self.shared.clone();
        let stream = async_stream(
            move |out: mpsc::Sender<Result<pb::SolveEvent, Status>>| async move {
                let mut first = true;
                // The latest progress whenever it changes (a slow client skips to
                // the newest); the channel closes when the query's task ends.
                while rx.changed().await.is_ok() {
                    if std::mem::take(&mut first) {
                        shared
                            .metrics
                            .first_event
                            .get_or_create(&vec![])
                            .observe(ticket.started.elapsed().as_secs_f64());
                    }
                    let ev = request::event(&rx.borrow_and_update());
                    if out.send(Ok(ev)).await.is_err() {
                        // Client gone: dropping the ticket aborts the query.
                        let gone = Err(Status::cancelled("the client went away"));
                        shared.access_log(&ticket, &gone);
                        return;
                    }
                }
                let last = match ticket.finish(&shared).await {
                    Ok(o) => {
                        let resp = request::response(o, &ticket.id);
                        Ok(pb::SolveEvent {
                            best_answer: resp.answer.clone(),
                            best_score: resp.score,
                            usage: resp.usage,
                            progress: "done".into(),
                            r#final: Some(resp),
                        })
                    }
                    Err(e) => Err(e),
                };
                timer.finish(code_of(&last));
                let _ = out.send(last).await;
            },
        );
        let mut resp = Response::new(stream);
        request_id::insert(resp.metadata_mut(), &id);
        Ok(resp)
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        use std::sync::atomic::Ordering::Relaxed;
        let timer = self.shared.metrics.start("orchestrator", "ClusterStatus");
        let members = self
            .shared
            .registry
            .all()
            .into_iter()
            .map(|m| pb::Member {
                role: m.record.role.as_str().into(),
                instance_id: m.record.instance_id.clone(),
                address: if self.shared.status_addresses {
                    m.record.address.clone()
                } else {
                    String::new()
                },
                model_id: m
                    .info
                    .get()
                    .map(|i| i.model_id.clone())
                    .unwrap_or_else(|| m.record.model_id.clone()),
                health: m.health().into(),
                in_flight: m.in_flight.load(Relaxed),
                requests: m.requests.load(Relaxed),
                failures: m.failures.load(Relaxed),
                engine: m.info.get().map(|i| i.engine.clone()).unwrap_or_default(),
            })
            .collect();
        let snapshot = self.shared.registry.snapshot();
        let default = self.shared.default_model.as_deref();
        let generators = models::served(&snapshot, Role::Generator);
        let chosen_default = models::choose(&generators, "", default)
            .ok()
            .map(|c| c.model_id);
        let models = [Role::Generator, Role::Verifier]
            .into_iter()
            .flat_map(|role| {
                let chosen_default = chosen_default.clone();
                models::served(&snapshot, role)
                    .into_iter()
                    .map(move |m| pb::ServedModel {
                        role: role.as_str().into(),
                        flops_per_token: m.flops_per_token(),
                        default: role == Role::Generator
                            && chosen_default.as_deref() == Some(m.model_id.as_str()),
                        model_id: m.model_id,
                        parameters: m.parameters,
                        ready: m.ready as u32,
                        serving: m.serving as u32,
                    })
            })
            .collect();
        timer.finish(tonic::Code::Ok);
        Ok(Response::new(pb::ClusterStatusResponse {
            cluster: self.shared.cluster.clone(),
            discovery: self.shared.discovery.into(),
            members,
            models,
        }))
    }
}

/// A stream fed by a producer task; the task stops when the receiver is dropped.
fn async_stream<F, Fut>(producer: F) -> EventStream
where
    F: FnOnce(mpsc::Sender<Result<pb::SolveEvent, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let handle = tokio::spawn(producer(tx));
    let guard = AbortOnDrop(handle);
    Box::pin(futures::stream::unfold(
        (rx, guard),
        |(mut rx, guard)| async move { rx.recv().await.map(|item| (item, (rx, guard))) },
    ))
}
