//! `ponder`: the embedded local cluster, a client, and every node role in one binary.
//! Its exit status says what kind of failure ended it (`ponder_cli::exit`).

use clap::{Parser, Subcommand};
use ponder_cli::embedded::{EmbeddedCluster, EmbeddedConfig};
use ponder_cli::{client, models};
use ponder_cluster::connect::ConnectArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// mimalloc instead of glibc malloc: an orchestrator allocates and frees small buffers
/// for every gRPC call, and glibc's arenas cost about a fifth of its CPU there
/// (docs/scaling.md, "Orchestrator cost").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ponder",
    version,
    about = "Ponder: test-time compute on a cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the embedded local cluster (orchestrator, generators, verifier) on loopback
    /// with the bundled models, and serve until Ctrl-C.
    Up {
        #[arg(
            long,
            env = "PONDER_ORCHESTRATOR_ADDR",
            default_value = "127.0.0.1:50051"
        )]
        orchestrator_addr: SocketAddr,
        /// Generator nodes to start per generator model.
        #[arg(long, default_value_t = 1)]
        generators: usize,
        /// Start only the manifest's default generator model, not the whole ladder.
        #[arg(long)]
        default_only: bool,
        /// Use etcd at this URL for discovery instead of static membership.
        #[arg(long, env = "PONDER_ETCD")]
        etcd: Option<String>,
        #[arg(long, env = "PONDER_CLUSTER", default_value = "default")]
        cluster: String,
        /// Models directory: its manifest.json names the default generator and verifier
        /// (default: ./models).
        #[arg(long, env = "PONDER_MODELS")]
        models: Option<PathBuf>,
        /// Serve this verifier of the manifest instead of the default one (e.g.
        /// arith-prm-duo, the ensemble: docs/engine.md, "Verifier ensembles").
        #[arg(long, env = "PONDER_VERIFIER")]
        verifier: Option<String>,
        /// Serve Prometheus metrics for all nodes on this address.
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
        /// Serve the OpenAI-compatible HTTP gateway on this address (docs/gateway.md).
        #[arg(long, env = "PONDER_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
        gateway_addr: SocketAddr,
        /// Do not serve the HTTP gateway.
        #[arg(long)]
        no_gateway: bool,
        /// Load-adaptive budgets (docs/load-adaptive.md).
        #[command(flatten)]
        control: ponder_orchestrator::control::ControlArgs,
        /// Record every answer the nodes give under DIR (one directory per role and
        /// model), for recorded nodes to serve (docs/scaling.md).
        #[arg(long, env = "PONDER_RECORD_CALLS")]
        record_calls: Option<PathBuf>,
        /// How every node stores its KV cache: auto (each model's manifest entry; the
        /// bundled models say f16), f32 or f16 (docs/engine.md, "f16 KV cache").
        #[arg(long, env = "PONDER_KV_CACHE_DTYPE", default_value = "auto")]
        kv_cache_dtype: ponder_worker::node::KvCacheChoice,
        /// How every node holds its weights: auto (each model's manifest entry: bf16 for
        /// the bundled verifier, f32 for the generators), none, q8_0 or bf16
        /// (docs/engine.md, "bf16 weights").
        #[arg(long, env = "PONDER_QUANTIZE", default_value = "auto")]
        quantize: ponder_worker::node::QuantizeChoice,
        /// Answer the sample questions, print the results, and exit.
        #[arg(long)]
        demo: bool,
        /// Generations per demo question.
        #[arg(long, default_value_t = 16)]
        demo_budget: u32,
        #[arg(long, env = "PONDER_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: ponder_cluster::telemetry::LogFormat,
    },
    /// Ask the orchestrator one question.
    Solve {
        question: String,
        /// Strategy, by name with its optional main parameter: greedy, self_consistency,
        /// best_of_n, weighted_best_of_n, beam_search[:width], lookahead[:width],
        /// dvts[:width], rebase[:temperature], revisions[:chains], adaptive[:wave],
        /// compute_optimal (docs/strategies.md); default: the best available.
        #[arg(long)]
        strategy: Option<String>,
        /// Most generations to spend.
        #[arg(long, default_value_t = 16)]
        budget: u32,
        /// Most generator + verifier tokens (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_tokens: u64,
        /// Most generator + verifier FLOPs, probes included, e.g. 5e9 (0: no limit;
        /// --budget still applies).
        #[arg(long, default_value_t = 0.0)]
        max_flops: f64,
        /// The fewest generations the server may grant under load (0: 1); at most
        /// --budget (docs/load-adaptive.md).
        #[arg(long, default_value_t = 0)]
        min_generations: u32,
        /// fixed (grant --budget) or adaptive (between --min-generations and --budget,
        /// from the cluster's load); default: the server's (--budget-mode there).
        #[arg(long, value_parser = ponder_search::BudgetMode::parse)]
        budget_mode: Option<ponder_search::BudgetMode>,
        /// Run on this generator model (`ponder status` lists them); default: the
        /// cluster's default model.
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Sampling temperature, (0, 2]; default: the server's (0.8).
        #[arg(long)]
        temperature: Option<f32>,
        /// How step scores become one: last (default), min, prod or mean.
        #[arg(long)]
        aggregation: Option<String>,
        /// At the deadline, fail (exit 5) instead of answering with the best so far.
        #[arg(long)]
        strict: bool,
        /// Show the best answer as compute is spent.
        #[arg(long)]
        stream: bool,
        /// Print JSON (one object per line; with --stream, each event then the answer).
        #[arg(long)]
        json: bool,
        /// Give up after this many seconds (the gRPC deadline).
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
        #[arg(long, env = "PONDER_ADDR", default_value = "127.0.0.1:50051")]
        addr: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show the orchestrator's members, their health and load, and the models served.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[arg(long, env = "PONDER_ADDR", default_value = "127.0.0.1:50051")]
        addr: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List the models directory (models/manifest.json): each model's role, size,
    /// training compute, which are the defaults, and whether its files match their
    /// sha256 digests (exits non-zero when one does not).
    Models {
        #[arg(long, env = "PONDER_MODELS")]
        models: Option<PathBuf>,
    },
    /// Measure the real engine on each bundled model, one call at a time, and fit the
    /// recorded backend's latency model (writes <out>/<role>-<model dir>/latency.json,
    /// beside the recordings of `ponder up --record-calls <out>`); prints each fit's
    /// error, and its error on calls run together (docs/scaling.md).
    FitLatency {
        #[arg(long, env = "PONDER_MODELS")]
        models: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Calls measured per sample (or candidate) count.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Questions per level that the bundled policy answers at budget 16, each of
        /// its calls timed alone and fitted with the sweep (0: the sweep only).
        #[arg(long, default_value_t = 4)]
        workload: usize,
        /// Only the manifest's default generator and the verifier (the pair `ponder up
        /// --default-only` serves), not the rest of the ladder.
        #[arg(long)]
        default_only: bool,
    },
    /// Evaluate strategies on a held-out question set at several budgets, in-process
    /// on the bundled models; with --fit also fit the compute-optimal policy
    /// (2-fold cross-validated) and draw the plots. See docs/results.md.
    Eval {
        #[arg(long, env = "PONDER_MODELS")]
        models: Option<PathBuf>,
        /// Evaluate with this verifier of the manifest instead of the default one.
        #[arg(long, env = "PONDER_VERIFIER")]
        verifier: Option<String>,
        /// Questions per level (levels 1..=6).
        #[arg(long, default_value_t = 100)]
        per_level: usize,
        /// Seed of the question set (not the report's 20261129 nor PRM training's 1).
        #[arg(long, default_value_t = 20_261_130)]
        seed: u64,
        /// Generation budgets; sampling strategies are replayed at each from one draw
        /// of the largest.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
        budgets: Vec<u32>,
        /// Budgets for the strategies that must be run (beam search, ...); default:
        /// --budgets.
        #[arg(long, value_delimiter = ',')]
        run_budgets: Option<Vec<u32>>,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "self_consistency,best_of_n,weighted_best_of_n,adaptive:8,beam_search:4"
        )]
        strategies: Vec<String>,
        /// Fit the compute-optimal policy (writes <out>/policy.json; copy it to
        /// models/arith-policy.json to ship it), cross-validate it and draw the plots.
        #[arg(long)]
        fit: bool,
        /// Re-analyse the draws.jsonl and runs.jsonl already in --out (no sampling).
        #[arg(long, requires = "fit")]
        reanalyze: bool,
        /// The exchange-rate report over the manifest's whole generator ladder:
        /// accuracy vs inference FLOPs per (model, strategy), compute-optimal over
        /// (model, strategy, N) fitted with 2-fold cross-validation (writes
        /// <out>/ladder-policy.json), per-level FLOPs ratios against the larger models'
        /// greedy and majority accuracy, and the plots. Reuses the draws already in
        /// --out (docs/results.md, "Small model + search vs a bigger model").
        #[arg(long, conflicts_with_all = ["fit", "reanalyze", "addr"])]
        flops: bool,
        #[arg(long, default_value = "bench/results/eval")]
        out: PathBuf,
        /// Evaluate a running cluster through its API (Solve calls to this
        /// orchestrator) instead of the bundled models in-process; every strategy runs
        /// at every --budgets (docs/cli.md, "ponder eval").
        #[arg(long, conflicts_with_all = ["fit", "reanalyze", "run_budgets", "models"])]
        addr: Option<String>,
        /// With --addr: pin every query to this generator model.
        #[arg(long, requires = "addr")]
        model: Option<String>,
        /// With --addr: queries in flight at once.
        #[arg(long, requires = "addr", default_value_t = 8)]
        concurrency: usize,
        /// With --addr: each query's deadline, in seconds.
        #[arg(long, requires = "addr", default_value_t = 120.0)]
        timeout: f64,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Run one node role (the same as the ponder-<role> binaries).
    #[command(subcommand)]
    Node(Box<NodeCommand>),
}

#[derive(Subcommand)]
enum NodeCommand {
    Generator(ponder_generator::GeneratorArgs),
    Verifier(ponder_verifier::VerifierArgs),
    Orchestrator(Box<ponder_orchestrator::OrchestratorArgs>),
}

fn main() -> std::process::ExitCode {
    // Before the models load and the workers start: see the module's measurements.
    ponder_cli::allocator::disable_transparent_huge_pages();
    // Parse errors exit 2 (clap's own status, the same as exit::Exit::Usage).
    let cli = match node_with_config() {
        Some(node) => Cli {
            command: Command::Node(Box::new(node)),
        },
        None => Cli::parse(),
    };
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::from(ponder_cli::exit::code(&e))
        }
    }
}

/// `ponder node <role> ...` parsed with the role's configuration file applied
/// (`ponder_cluster::config`), as the `ponder-<role>` binaries parse theirs; None for
/// every other command.
fn node_with_config() -> Option<NodeCommand> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_none_or(|a| a != "node") {
        return None;
    }
    let role = argv.get(2)?.to_str()?.to_string();
    // The role's own parser, named as `ponder node <role>` in its messages.
    let rest = std::iter::once(std::ffi::OsString::from(format!("ponder node {role}")))
        .chain(argv[3..].iter().cloned());
    use ponder_cluster::config::parse_from;
    match role.as_str() {
        "generator" => Some(NodeCommand::Generator(parse_from(rest))),
        "verifier" => Some(NodeCommand::Verifier(parse_from(rest))),
        "orchestrator" => Some(NodeCommand::Orchestrator(Box::new(parse_from(rest)))),
        _ => None,
    }
}

fn output(json: bool) -> client::Output {
    if json {
        client::Output::Json
    } else {
        client::Output::Text
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    ponder_engine::engine::init_cpu_threads();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match cli.command {
            Command::Up {
                orchestrator_addr,
                generators,
                default_only,
                etcd,
                cluster,
                models,
                verifier,
                metrics_addr,
                gateway_addr,
                no_gateway,
                control,
                record_calls,
                kv_cache_dtype,
                quantize,
                demo,
                demo_budget,
                log_format,
            } => {
                ponder_cluster::telemetry::init_logging(log_format);
                let bundled = models::bundled(models.as_deref(), verifier.as_deref())?;
                // The whole ladder runs the policy over model sizes; the default model
                // alone runs the one fitted on it.
                let whole_ladder = !default_only && !bundled.other_generators.is_empty();
                let policy = match (whole_ladder, bundled.ladder_policy) {
                    (true, Some(ladder)) => Some(ladder),
                    _ => bundled.policy,
                };
                let cfg = EmbeddedConfig {
                    orchestrator_addr,
                    generator_model: bundled.generator,
                    other_generator_models: if default_only {
                        vec![]
                    } else {
                        bundled.other_generators
                    },
                    verifier_model: bundled.verifier,
                    policy,
                    generators,
                    etcd: etcd.into_iter().collect(),
                    cluster,
                    metrics_addr,
                    gateway_addr: (!no_gateway).then_some(gateway_addr),
                    control,
                    record_calls,
                    kv_cache_dtype,
                    quantize,
                };
                let cluster = EmbeddedCluster::start(cfg).await?;
                println!("orchestrator listening on {}", cluster.addr());
                if let Some(g) = cluster.gateway_addr() {
                    // `ponder up` serves no TLS: always plain HTTP.
                    println!("gateway listening on http://{g}");
                }
                if demo {
                    let r = client::demo(&cluster.addr().to_string(), demo_budget, None).await;
                    cluster.stop().await;
                    return r;
                }
                ponder_cluster::telemetry::shutdown_signal().await;
                cluster.stop().await;
                Ok(())
            }
            Command::Solve {
                question,
                strategy,
                budget,
                max_tokens,
                max_flops,
                min_generations,
                budget_mode,
                model,
                seed,
                temperature,
                aggregation,
                strict,
                stream,
                json,
                timeout,
                addr,
                connect,
            } => {
                if !(timeout > 0.0 && timeout.is_finite()) {
                    return Err(ponder_cli::exit::usage("--timeout must be positive"));
                }
                let mut req =
                    client::request(&question, strategy.as_deref(), budget, max_tokens, seed);
                if let Some(b) = req.budget.as_mut() {
                    b.max_flops = max_flops;
                    b.min_generations = min_generations;
                }
                req.budget_mode = ponder_cluster::wire::budget_mode_to_pb(budget_mode).into();
                req.model_id = model.unwrap_or_default();
                // Checked by the server, which says what to fix (exit 3).
                req.temperature = temperature.unwrap_or(0.0);
                req.aggregation = aggregation.unwrap_or_default();
                req.strict = strict;
                client::solve(
                    &addr,
                    &connect,
                    req,
                    stream,
                    Duration::from_secs_f64(timeout),
                    output(json),
                )
                .await
            }
            Command::Status {
                json,
                addr,
                connect,
            } => client::status(&addr, &connect, output(json)).await,
            Command::Models { models } => models::print(models.as_deref()),
            Command::FitLatency {
                models,
                out,
                repeats,
                workload,
                default_only,
            } => {
                if repeats == 0 {
                    return Err(ponder_cli::exit::usage("--repeats must be at least 1"));
                }
                ponder_cli::fit_latency::run(ponder_cli::fit_latency::FitLatency {
                    models,
                    out,
                    repeats,
                    workload,
                    default_only,
                })
                .await
            }
            Command::Eval {
                models,
                verifier,
                per_level,
                seed,
                budgets,
                run_budgets,
                strategies,
                fit,
                reanalyze,
                flops,
                out,
                addr,
                model,
                concurrency,
                timeout,
                connect,
            } => {
                if flops {
                    let report = ponder_cli::eval::ladder_run::run(
                        ponder_cli::eval::ladder_run::FlopsConfig {
                            models: models::models_dir(models.as_deref())?,
                            per_level,
                            seed,
                            budgets,
                            out: out.clone(),
                            verifier: verifier.clone(),
                        },
                    )
                    .await?;
                    println!("{}", ponder_cli::eval::exchange_render::markdown(&report));
                    println!("wrote {}", out.join("exchange.md").display());
                    return Ok(());
                }
                let cells = if let Some(addr) = addr {
                    if !(timeout > 0.0 && timeout.is_finite()) {
                        return Err(ponder_cli::exit::usage("--timeout must be positive"));
                    }
                    ponder_cli::eval::remote::run(ponder_cli::eval::remote::RemoteEval {
                        addr,
                        connect,
                        per_level,
                        seed,
                        budgets,
                        strategies,
                        model,
                        concurrency,
                        timeout: Duration::from_secs_f64(timeout),
                        out: out.clone(),
                    })
                    .await?
                } else if reanalyze {
                    let replayed: Vec<String> = strategies
                        .iter()
                        .map(|s| ponder_search::StrategyKind::parse(s).map(|k| k.spec()))
                        .collect::<Result<Vec<_>, _>>()?
                        .into_iter()
                        .filter(|s| {
                            ponder_search::replay::replayable(
                                ponder_search::StrategyKind::parse(s).expect("parsed above"),
                            )
                        })
                        .collect();
                    ponder_cli::eval::reanalyze(&out, &replayed, &budgets)?
                } else {
                    let cfg = ponder_cli::eval::EvalConfig {
                        models: models::models_dir(models.as_deref())?,
                        verifier: verifier.clone(),
                        per_level,
                        seed,
                        budgets,
                        run_budgets,
                        strategies,
                        out: out.clone(),
                        fit,
                    };
                    ponder_cli::eval::run(cfg).await?
                };
                ponder_cli::eval::print_table(&cells, &out);
                Ok(())
            }
            Command::Node(node) => match *node {
                NodeCommand::Generator(a) => ponder_generator::run(a).await,
                NodeCommand::Verifier(a) => ponder_verifier::run(a).await,
                NodeCommand::Orchestrator(a) => ponder_orchestrator::run(*a).await,
            },
        }
    })
}
