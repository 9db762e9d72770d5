//! The embedded local cluster behind `ponder up`: real gRPC servers on loopback in one
//! process (N generators of each generator model, one verifier, one orchestrator),
//! wired by static membership or by etcd. The same services run as separate processes
//! in a real deployment.

use ponder_cluster::metrics::Metrics;
use ponder_cluster::node::NodeArgs;
use ponder_cluster::BoxedFuture;
use ponder_orchestrator::{OrchestratorArgs, OrchestratorNode};
use ponder_worker::node::{KvCacheChoice, ModelArgs, ModelNode, QuantizeChoice};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub orchestrator_addr: SocketAddr,
    /// The default generator model: requests that pin none run on it.
    pub generator_model: PathBuf,
    /// Other generator models (the rest of the ladder), each on `generators` nodes too.
    pub other_generator_models: Vec<PathBuf>,
    pub verifier_model: Option<PathBuf>,
    /// Compute-optimal policy JSON.
    pub policy: Option<PathBuf>,
    /// Nodes per generator model.
    pub generators: usize,
    /// etcd endpoints: nodes register there and the orchestrator discovers them.
    pub etcd: Vec<String>,
    pub cluster: String,
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the OpenAI-compatible HTTP gateway here (`ponder up`: 127.0.0.1:8080).
    pub gateway_addr: Option<SocketAddr>,
    /// The orchestrator's budget control (docs/load-adaptive.md).
    pub control: ponder_orchestrator::control::ControlArgs,
    /// Every node records its answers under this directory, one subdirectory per role
    /// and model (`generator-<model dir>`, `verifier-<model dir>`): the recordings a
    /// recorded node serves (docs/scaling.md).
    pub record_calls: Option<PathBuf>,
    /// How every node stores its KV cache (`auto`: each model's manifest entry).
    pub kv_cache_dtype: KvCacheChoice,
    /// How every node holds its weights (`auto`: each model's manifest entry).
    pub quantize: QuantizeChoice,
}

/// Where a node of `role` serving the model at `model` records, under `dir`.
pub fn recording_dir(dir: &std::path::Path, role: &str, model: &std::path::Path) -> PathBuf {
    let name = model
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    dir.join(format!("{role}-{name}"))
}

pub struct EmbeddedCluster {
    pub orchestrator: OrchestratorNode,
    pub generators: Vec<ModelNode>,
    pub verifier: Option<ModelNode>,
    pub metrics: Metrics,
}

impl EmbeddedCluster {
    /// Starts every node and returns when all are healthy.
    pub fn start(cfg: EmbeddedConfig) -> BoxedFuture<'static, anyhow::Result<Self>> {
        Box::pin(async move {
            anyhow::ensure!(cfg.generators >= 1, "--generators must be at least 1");
            let metrics = Metrics::new();
            if let Some(a) = cfg.metrics_addr {
                metrics.serve(a).await?;
            }
            let worker_args = || NodeArgs {
                etcd: cfg.etcd.clone(),
                cluster: cfg.cluster.clone(),
                drain_secs: 5,
                ..NodeArgs::default()
            };
            let mut generators = Vec::new();
            let models = std::iter::once(&cfg.generator_model).chain(&cfg.other_generator_models);
            let model_args = |role: &str, model: &PathBuf| ModelArgs {
                record_calls: cfg
                    .record_calls
                    .as_ref()
                    .map(|dir| recording_dir(dir, role, model)),
                kv_cache_dtype: cfg.kv_cache_dtype,
                quantize: cfg.quantize,
                ..ModelArgs::new(model.clone())
            };
            for model in models {
                for _ in 0..cfg.generators {
                    let args = ponder_generator::GeneratorArgs {
                        node: worker_args(),
                        model: model_args("generator", model),
                    };
                    generators.push(ponder_generator::start(args, metrics.clone()).await?);
                }
            }
            // The default model as its nodes report it in ModelInfo.
            let default_model = generators[0].worker.get()?.info().id.clone();
            let verifier = match &cfg.verifier_model {
                Some(m) => Some(
                    ponder_verifier::start(
                        ponder_verifier::VerifierArgs {
                            node: worker_args(),
                            model: model_args("verifier", m),
                        },
                        metrics.clone(),
                    )
                    .await?,
                ),
                None => None,
            };
            let mut oargs = OrchestratorArgs::new(NodeArgs {
                listen: cfg.orchestrator_addr,
                ..worker_args()
            });
            oargs.policy = cfg.policy.clone();
            oargs.default_model = Some(default_model);
            oargs.gateway.gateway_addr = cfg.gateway_addr;
            oargs.control = cfg.control.clone();
            // Everything runs on this machine, for its one user: show where, and allow
            // the API's whole budget range (a shared server's operator caps it lower).
            oargs.status_addresses = true;
            oargs.limits.max_generations = ponder_search::budget::MAX_GENERATIONS;
            if cfg.etcd.is_empty() {
                oargs.generators = generators.iter().map(|g| g.node.addr.to_string()).collect();
                oargs.verifiers = verifier.iter().map(|v| v.node.addr.to_string()).collect();
            }
            let orchestrator = ponder_orchestrator::start(oargs, metrics.clone()).await?;
            if verifier.is_some() {
                // Healthy means every member answered ModelInfo, the verifier included.
                let all_ready = |snap: &ponder_cluster::Snapshot| {
                    (snap.ready(ponder_cluster::Role::Verifier) > 0
                        && snap.ready(ponder_cluster::Role::Generator) >= generators.len())
                    .then_some(())
                };
                orchestrator.registry.wait_for(None, all_ready).await;
            }
            Ok(Self {
                orchestrator,
                generators,
                verifier,
                metrics,
            })
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.orchestrator.node.addr
    }

    /// The HTTP gateway's address, when it serves one.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        self.orchestrator.gateway.as_ref().map(|g| g.addr)
    }

    pub fn stop(self) -> BoxedFuture<'static, ()> {
        Box::pin(async move {
            self.orchestrator.stop().await;
            for g in self.generators {
                g.stop().await;
            }
            if let Some(v) = self.verifier {
                v.stop().await;
            }
        })
    }
}
