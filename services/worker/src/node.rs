//! The lifecycle of a node that serves a model (generator or verifier).
//!
//! The gRPC port answers at once (health NOT_SERVING, calls UNAVAILABLE "loading");
//! the model loads and warms up on a blocking thread; then the node turns SERVING and
//! registers. A once-cell hands the loaded worker to the service without a lock.

use crate::backend::{Backend, Engine};
use crate::manifest::{resolve_model, ModelRole};
use crate::recorded::recorder::Recorder;
use crate::recorded::{RecordedConfig, RecordedWorker, ENGINE_PREFIX};
use clap::Args;
use ponder_cluster::member::{MemberRecord, Role};
use ponder_cluster::metrics::Metrics;
use ponder_cluster::node::{Node, NodeArgs};
use ponder_cluster::tls::ClientAuth;
use ponder_cluster::BoxedFuture;
use ponder_engine::{LoadOptions, ModelWorker, WorkerConfig};
use ponder_search::SearchError;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tonic::service::Routes;

/// Model flags of a generator or verifier node.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A models directory with manifest.json (its default model for this role, or
    /// --model-name, checked against the manifest's sha256), one model directory (HF
    /// layout) or a .gguf file.
    /// Required with --engine candle.
    #[arg(long, env = "PONDER_MODEL")]
    pub model: Option<PathBuf>,
    /// What answers calls: `candle` (the model, the default) or `recorded:DIR`, a
    /// recording of real calls served at a latency fitted to the real engine, with no
    /// model work: for scale measurements only (docs/scaling.md). Orchestrators refuse
    /// recorded members unless started with --allow-recorded.
    #[arg(long, env = "PONDER_ENGINE", default_value = "candle")]
    pub engine: EngineChoice,
    /// Append every answer this node gives to DIR (info.json, calls-<instance>.jsonl),
    /// a recording that `--engine recorded:DIR` serves.
    #[arg(long, env = "PONDER_RECORD_CALLS")]
    pub record_calls: Option<PathBuf>,
    /// Which model of the --model directory's manifest to serve (default: the role's
    /// default model).
    #[arg(long, env = "PONDER_MODEL_NAME")]
    pub model_name: Option<String>,
    /// Requests accepted before answering RESOURCE_EXHAUSTED.
    #[arg(long, env = "PONDER_MAX_QUEUED", default_value_t = 256)]
    pub max_queued: usize,
    /// Sequences decoded together at most.
    #[arg(long, env = "PONDER_MAX_BATCH", default_value_t = 256)]
    pub max_active_sequences: usize,
    /// New tokens per forward pass at most; a scoring request longer than this is
    /// scored over several passes, so other clients' requests get passes in between
    /// (0: from the model's size, passes of about 1.5 GFLOP within 128..=2048 tokens:
    /// 2048 for arith-gen-xs and -s, 512 for arith-gen-l and arith-prm).
    #[arg(long, env = "PONDER_MAX_BATCH_TOKENS", default_value_t = 0)]
    pub max_batch_tokens: usize,
    /// Compute threads of the model worker (0: one for a model under 20M parameters,
    /// every core for a larger one). Set it when several nodes share a host.
    #[arg(long, env = "PONDER_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Memory the prefix cache may hold, in MiB of KV buffers (0: no prefix cache).
    /// Tree searches reuse it for every path's earlier steps (docs/engine.md, "Prefix
    /// cache").
    #[arg(long, env = "PONDER_PREFIX_CACHE_MIB", default_value_t = ponder_engine::DEFAULT_PREFIX_CACHE_MIB)]
    pub prefix_cache_mib: usize,
    /// Quantize a safetensors model's linear layers at load: auto (what the model's
    /// manifest entry says, else none), none, q8_0 (int8 weights; docs/engine.md, "Int8
    /// weights") or bf16 (bf16 weights on AVX-512 BF16; docs/engine.md, "bf16 weights").
    #[arg(long, env = "PONDER_QUANTIZE", default_value = "auto")]
    pub quantize: QuantizeChoice,
    /// How the KV cache stores keys and values: auto (what the model's manifest entry
    /// says, else f32), f32 (exact) or f16 (half the bytes for attention to read, every
    /// sum still f32; docs/engine.md, "f16 KV cache").
    #[arg(long, env = "PONDER_KV_CACHE_DTYPE", default_value = "auto")]
    pub kv_cache_dtype: KvCacheChoice,
    /// Longest prompt (generate) or question plus steps (score) accepted, in bytes (at
    /// most 262144); longer: INVALID_ARGUMENT.
    #[arg(long, env = "PONDER_MAX_PROMPT_BYTES", default_value_t = ponder_engine::DEFAULT_MAX_PROMPT_BYTES)]
    pub max_prompt_bytes: usize,
    /// Stop strings one generate request may carry.
    #[arg(long, env = "PONDER_MAX_STOP_STRINGS", default_value_t = ponder_engine::DEFAULT_MAX_STOP_STRINGS)]
    pub max_stop_strings: usize,
    /// Total bytes of a request's stop strings.
    #[arg(long, env = "PONDER_MAX_STOP_BYTES", default_value_t = ponder_engine::DEFAULT_MAX_STOP_BYTES)]
    pub max_stop_bytes: usize,
}

impl ModelArgs {
    pub fn new(model: PathBuf) -> Self {
        Self {
            model: Some(model),
            engine: EngineChoice::Candle,
            record_calls: None,
            model_name: None,
            max_queued: 256,
            max_active_sequences: 256,
            max_batch_tokens: 0,
            threads: 0,
            prefix_cache_mib: ponder_engine::DEFAULT_PREFIX_CACHE_MIB,
            quantize: QuantizeChoice::Auto,
            kv_cache_dtype: KvCacheChoice::Auto,
            max_prompt_bytes: ponder_engine::DEFAULT_MAX_PROMPT_BYTES,
            max_stop_strings: ponder_engine::DEFAULT_MAX_STOP_STRINGS,
            max_stop_bytes: ponder_engine::DEFAULT_MAX_STOP_BYTES,
        }
    }

    /// Checks the input caps and the engine's flags (a message naming the flag to fix).
    pub fn check(&self) -> anyhow::Result<()> {
        match &self.engine {
            EngineChoice::Candle => anyhow::ensure!(
                self.model.is_some(),
                "--model is required (a models directory, a model directory or a .gguf file)"
            ),
            EngineChoice::Recorded(_) => anyhow::ensure!(
                self.record_calls.is_none(),
                "--record-calls records a real engine's answers; a node with --engine \
                 recorded:DIR only replays them"
            ),
        }
        anyhow::ensure!(
            (1..=ponder_engine::MAX_PROMPT_CHARS).contains(&self.max_prompt_bytes),
            "--max-prompt-bytes must be in 1..={}, got {}",
            ponder_engine::MAX_PROMPT_CHARS,
            self.max_prompt_bytes
        );
        anyhow::ensure!(
            self.max_stop_strings <= 256 && self.max_stop_bytes <= 65_536,
            "--max-stop-strings must be at most 256 and --max-stop-bytes at most 65536"
        );
        Ok(())
    }
}

/// A serving setting a node's flag either fixes or leaves to the model's manifest entry
/// (`auto`, the default): `--kv-cache-dtype` ([`KvCacheChoice`]) and `--quantize`
/// ([`QuantizeChoice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestOr<T> {
    /// The model's manifest entry decides; the setting's default where it says nothing.
    #[default]
    Auto,
    Fixed(T),
}

/// `--kv-cache-dtype`: auto, f32 or f16.
pub type KvCacheChoice = ManifestOr<ponder_engine::KvDtype>;
/// `--quantize`: auto, none, q8_0 or bf16.
pub type QuantizeChoice = ManifestOr<ponder_engine::Quantize>;

impl<T: Default> ManifestOr<T> {
    /// The setting for a model whose manifest entry asks for `entry` (if anything).
    pub fn pick(self, entry: Option<T>) -> T {
        match self {
            ManifestOr::Auto => entry.unwrap_or_default(),
            ManifestOr::Fixed(value) => value,
        }
    }
}

/// The flag a [`ManifestOr`] setting is given by, and the values it takes besides
/// `auto`, for the message a wrong value gets.
pub trait FlagSetting: std::str::FromStr {
    const FLAG: &'static str;
    const VALUES: &'static str;
}

impl FlagSetting for ponder_engine::KvDtype {
    const FLAG: &'static str = "--kv-cache-dtype";
    const VALUES: &'static str = "f32 or f16";
}

impl FlagSetting for ponder_engine::Quantize {
    const FLAG: &'static str = "--quantize";
    const VALUES: &'static str = "none, q8_0 or bf16";
}

impl<T: FlagSetting> std::str::FromStr for ManifestOr<T> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            other => other
                .parse()
                .map(Self::Fixed)
                .map_err(|_| format!("{} must be auto, {}, got {other:?}", T::FLAG, T::VALUES)),
        }
    }
}

/// The `--engine` flag.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineChoice {
    Candle,
    Recorded(PathBuf),
}

impl std::str::FromStr for EngineChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            crate::backend::CANDLE_ENGINE => Ok(Self::Candle),
            _ => match s.strip_prefix(ENGINE_PREFIX) {
                Some(dir) if !dir.is_empty() => Ok(Self::Recorded(PathBuf::from(dir))),
                _ => Err(format!(
                    "--engine {s:?}: write candle or recorded:DIR (a recording directory)"
                )),
            },
        }
    }
}

/// The worker once loaded; what the gRPC service reads.
#[derive(Clone, Default)]
pub struct WorkerCell(Arc<OnceLock<(Backend, String)>>);

impl WorkerCell {
    pub fn get(&self) -> Result<&Backend, SearchError> {
        self.0
            .get()
            .map(|(w, _)| w)
            .ok_or_else(|| SearchError::Unavailable("the model is still loading".into()))
    }

    /// This node's registration id (set together with the worker).
    pub fn instance_id(&self) -> &str {
        self.0.get().map_or("", |(_, id)| id.as_str())
    }
}

pub struct ModelNode {
    pub node: Node,
    pub worker: WorkerCell,
    pub role: Role,
    /// Copies the worker's counters into the metrics and watches that it is alive.
    stats: tokio::task::JoinHandle<()>,
}

impl ModelNode {
    /// Starts serving `routes` (built over `cell`), loads the model, turns SERVING.
    /// Returns once the model is loaded and warmed up.
    pub fn start(
        node_args: NodeArgs,
        model: ModelArgs,
        role: Role,
        service_name: &'static str,
        cell: WorkerCell,
        routes: Routes,
        metrics: Metrics,
    ) -> BoxedFuture<'static, anyhow::Result<Self>> {
        Box::pin(async move {
            model.check()?;
            // Workers accept only cluster peers once a CA is configured (docs/security.md).
            let mut node =
                Node::start(node_args, service_name, routes, ClientAuth::Required).await?;
            let load_started = std::time::Instant::now();
            let backend = match &model.engine {
                EngineChoice::Candle => {
                    let path = model.model.clone().expect("checked: --model is set");
                    tracing::info!(addr = %node.addr, model = %path.display(), "loading model");
                    Backend::new(Engine::Candle(load_model(&model, path, role).await?))
                }
                EngineChoice::Recorded(dir) => {
                    let worker = RecordedWorker::open(
                        dir,
                        role.as_str(),
                        RecordedConfig {
                            max_queued: model.max_queued,
                            max_active_sequences: model.max_active_sequences,
                            max_batch_tokens: model.max_batch_tokens,
                        },
                    )?;
                    tracing::warn!(
                        addr = %node.addr,
                        recording = %dir.display(),
                        engine = crate::recorded::ENGINE_NAME,
                        "RECORDED backend: answers replayed from a recording at a fitted \
                         latency, no model runs (docs/scaling.md)"
                    );
                    Backend::new(Engine::Recorded(worker))
                }
            };
            let instance_id = node.instance_id(role.as_str());
            let backend = match &model.record_calls {
                Some(dir) => {
                    let recorder =
                        Recorder::create(dir, &instance_id, &backend.recorded_info(role.as_str()))?;
                    tracing::info!(dir = %dir.display(), "recording every answer (--record-calls)");
                    backend.recording(recorder)
                }
                None => backend,
            };
            let info = backend.info().clone();
            let load_seconds = load_started.elapsed().as_secs_f64();
            let threads = backend.model_worker().map_or(0, ModelWorker::threads);
            let engine = backend.engine_name();
            let labels = Metrics::labels(&[("role", role.as_str())]);
            metrics
                .model_load_seconds
                .get_or_create(&labels)
                .set(load_seconds);
            metrics
                .worker_threads
                .get_or_create(&labels)
                .set(threads as i64);
            metrics
                .worker_engine
                .get_or_create(&Metrics::labels(&[
                    ("role", role.as_str()),
                    ("engine", engine),
                ]))
                .set(1);
            let _ = cell.0.set((backend.clone(), instance_id.clone()));
            let health = Health {
                reporter: node.health(),
                service_name,
            };
            let stats = spawn_stats(backend, metrics, role, health);
            let record = MemberRecord {
                role,
                instance_id,
                address: node.advertised(),
                model_id: info.id.clone(),
                capacity: model.max_queued as u32,
            };
            node.set_serving(Some(record)).await;
            tracing::info!(
                addr = %node.addr,
                model = %info.id,
                engine,
                parameters = info.parameters,
                load_seconds = format!("{load_seconds:.2}"),
                resident_mib = ponder_cluster::metrics::resident_bytes().unwrap_or(0) >> 20,
                threads,
                "serving"
            );
            Ok(Self {
                node,
                worker: cell,
                role,
                stats,
            })
        })
    }

    pub fn stop(self) -> BoxedFuture<'static, ()> {
        Box::pin(async move {
            self.stats.abort();
            self.node.stop().await
        })
    }

    /// What a node binary does once started: print its ready line, serve until
    /// SIGTERM/Ctrl-C (or a server error), then stop gracefully.
    pub fn serve_until_shutdown(mut self) -> BoxedFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            println!("{} listening on {}", self.role.as_str(), self.node.addr);
            tokio::select! {
                _ = ponder_cluster::telemetry::shutdown_signal() => {}
                r = self.node.wait() => r?,
            }
            self.stop().await;
            ponder_cluster::trace::shutdown();
            Ok(())
        })
    }
}

/// Loads, checks and warms up the model at `path` (resolved through a models
/// manifest) on a blocking thread, and starts its worker.
async fn load_model(model: &ModelArgs, given: PathBuf, role: Role) -> anyhow::Result<ModelWorker> {
    let name = model.model_name.clone();
    let needs_prm = role == Role::Verifier;
    let quantize = model.quantize;
    let kv_choice = model.kv_cache_dtype;
    let model_role = match role {
        Role::Generator => ModelRole::Generator,
        Role::Verifier => ModelRole::Verifier,
        Role::Orchestrator => anyhow::bail!("an orchestrator serves no model"),
    };
    let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let resolved = resolve_model(&given, model_role, name.as_deref())?;
        let path = resolved.path;
        if path != given {
            tracing::info!(model = %path.display(), "resolved through the models manifest");
        }
        let opts = LoadOptions {
            quantize: quantize.pick(resolved.quantize),
            kv_cache: kv_choice.pick(resolved.kv_cache),
            ..LoadOptions::default()
        };
        let loaded = ponder_engine::load(&path, &opts)?;
        if needs_prm && loaded.prm.is_none() {
            anyhow::bail!(
                "{} is not a PRM: a verifier needs a prm.json beside the weights",
                path.display()
            );
        }
        loaded.warm_up()?;
        Ok(loaded)
    })
    .await??;
    Ok(ModelWorker::spawn(
        loaded,
        WorkerConfig {
            max_queued_requests: model.max_queued,
            max_active_sequences: model.max_active_sequences,
            max_batch_tokens: model.max_batch_tokens,
            threads: model.threads,
            prefix_cache_bytes: model.prefix_cache_mib.saturating_mul(1 << 20),
            max_prompt_bytes: model.max_prompt_bytes,
            max_stop_strings: model.max_stop_strings,
            max_stop_bytes: model.max_stop_bytes,
            ..WorkerConfig::default()
        },
    ))
}

/// Where a node reports that its model worker has stopped.
struct Health {
    reporter: tonic_health::server::HealthReporter,
    service_name: &'static str,
}

/// Copies the worker's counters into the metrics once a second; if the worker thread
/// has stopped, turns the node NOT_SERVING (it can answer nothing any more) and ends.
fn spawn_stats(
    worker: Backend,
    metrics: Metrics,
    role: Role,
    health: Health,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let labels = Metrics::labels(&[("role", role.as_str())]);
        let mut last = [0u64; 6];
        let mut last_misses = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Ok(stats) = worker.stats().await else {
                tracing::error!(
                    role = role.as_str(),
                    "the model worker stopped; NOT_SERVING"
                );
                for service in ["", health.service_name] {
                    health
                        .reporter
                        .set_service_status(service, tonic_health::ServingStatus::NotServing)
                        .await;
                }
                return;
            };
            metrics
                .queue_depth
                .get_or_create(&labels)
                .set(worker.queue_depth() as i64);
            let misses = worker.misses();
            if misses > last_misses {
                metrics
                    .refusals
                    .get_or_create(&Metrics::labels(&[
                        ("what", "call"),
                        ("reason", "not_recorded"),
                    ]))
                    .inc_by(misses - last_misses);
                last_misses = misses;
            }
            if let Some(rss) = ponder_cluster::metrics::resident_bytes() {
                metrics.resident_memory_bytes.set(rss as i64);
            }
            let current_batch = if stats.active_sequences == 0 {
                0
            } else {
                stats.last_decode_batch
            };
            metrics
                .batch_size
                .get_or_create(&labels)
                .set(current_batch as i64);
            for (state, n) in [
                ("running", stats.active_sequences),
                ("waiting", stats.waiting_requests),
            ] {
                let l = Metrics::labels(&[("role", role.as_str()), ("state", state)]);
                metrics.sequences.get_or_create(&l).set(n as i64);
            }
            let cache = &stats.prefix_cache;
            metrics
                .prefix_cache_tokens
                .get_or_create(&labels)
                .set(cache.cached_tokens as i64);
            metrics
                .prefix_cache_bytes
                .get_or_create(&labels)
                .set(cache.cached_bytes as i64);
            // Counters from the worker's running totals: add what is new since the last
            // second.
            let now = [
                stats.prompt_tokens,
                stats.generated_tokens,
                stats.scored_tokens,
                cache.hits,
                cache.lookups.saturating_sub(cache.hits),
                cache.saved_tokens,
            ];
            let counters = [
                (&metrics.tokens, Some(("kind", "prompt"))),
                (&metrics.tokens, Some(("kind", "generated"))),
                (&metrics.tokens, Some(("kind", "scored"))),
                (&metrics.prefix_cache_lookups, Some(("result", "hit"))),
                (&metrics.prefix_cache_lookups, Some(("result", "miss"))),
                (&metrics.prefix_cache_saved_tokens, None),
            ];
            for (i, (family, label)) in counters.into_iter().enumerate() {
                let mut l = labels.clone();
                if let Some((k, v)) = label {
                    l.push((k.into(), v.into()));
                }
                family
                    .get_or_create(&l)
                    .inc_by(now[i].saturating_sub(last[i]));
            }
            last = now;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{KvCacheChoice, QuantizeChoice};
    use ponder_engine::KvDtype;

    #[test]
    fn the_quantize_flag_defers_to_the_manifest_only_when_auto() {
        use ponder_engine::Quantize;
        let auto: QuantizeChoice = "auto".parse().unwrap();
        assert_eq!(auto.pick(Some(Quantize::Bf16)), Quantize::Bf16);
        assert_eq!(auto.pick(None), Quantize::None);
        let none: QuantizeChoice = "none".parse().unwrap();
        assert_eq!(none.pick(Some(Quantize::Bf16)), Quantize::None);
        let err = "int4".parse::<QuantizeChoice>().unwrap_err();
        assert!(
            err.contains("--quantize must be auto, none, q8_0 or bf16"),
            "{err}"
        );
    }

    #[test]
    fn the_kv_cache_flag_defers_to_the_manifest_only_when_auto() {
        let auto: KvCacheChoice = "auto".parse().unwrap();
        assert_eq!(auto.pick(Some(KvDtype::F16)), KvDtype::F16);
        assert_eq!(auto.pick(None), KvDtype::F32);
        let f32: KvCacheChoice = "f32".parse().unwrap();
        assert_eq!(f32.pick(Some(KvDtype::F16)), KvDtype::F32);
        let f16: KvCacheChoice = "f16".parse().unwrap();
        assert_eq!(f16.pick(None), KvDtype::F16);
        let err = "fp8".parse::<KvCacheChoice>().unwrap_err();
        assert!(err.contains("auto, f32 or f16"), "{err}");
    }
}
