//! The command line: `run`, `sweep` and `compare`, their flags, and their validation
//! into a [`Plan`], a [`Workload`] and a [`Target`]. Everything is checked before the
//! first connection, so a bad flag never sends half a load.

use crate::arrivals::Arrivals;
use crate::driver::{Loop, Plan};
use crate::mix::Mix;
use crate::progress::Progress;
use crate::record;
use crate::report::{Report, RunInfo};
use crate::sweep::{self, Sweep};
use crate::target::{Rpc, Target};
use crate::workload::{self, Questions, Workload};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ponder_cluster::connect::ConnectArgs;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "ponder-load",
    version,
    about = "Load-test a Ponder orchestrator: latency without coordinated omission, accuracy and goodput",
    long_about = "Load-test a Ponder orchestrator over gRPC. It sends only to the --addr it is given \
                  (no discovery), and every run is bounded in requests and in time."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One run: an open loop at --rate, or a closed loop at --concurrency.
    Run(RunArgs),
    /// Open-loop steps at rising rates until the SLO breaks; reports the knee.
    Sweep(SweepArgs),
    /// Print the differences between two --json reports.
    Compare(CompareArgs),
}

#[derive(Args, Debug)]
pub struct TargetArgs {
    /// The orchestrator (host:port or URL), or several comma-separated (gRPC only):
    /// request i goes to the (i mod K)-th of K. The only addresses ever dialled.
    #[arg(
        long,
        env = "PONDER_ADDR",
        default_value = "127.0.0.1:50051",
        value_delimiter = ','
    )]
    pub addr: Vec<String>,
    /// Call SolveStream (and measure the time to the first event) instead of Solve.
    #[arg(long)]
    pub stream: bool,
    /// HTTP/2 connections to open; requests take them in turn.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// The gRPC deadline of each request.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub timeout: Duration,
    /// TLS and the API key, as for `ponder solve` (docs/security.md).
    #[command(flatten)]
    pub access: ConnectArgs,
    /// grpc: ponder.v1.Orchestrator at --addr; openai: the HTTP gateway's POST
    /// /v1/chat/completions at --addr (http:// only; docs/gateway.md), with --stream
    /// as server-sent events.
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: crate::target::Protocol,
}

#[derive(Args, Debug)]
pub struct WorkloadArgs {
    /// ponder-arith levels with weights, LEVEL=WEIGHT,... (levels 1..=6).
    #[arg(long, default_value = "1=1,2=1,3=1,4=1,5=1,6=1")]
    pub levels: String,
    /// Seed of the questions, the mix draws and the arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Ask the questions of this JSONL file instead ({"question": ..., "answer": ...}
    /// per line; the answer is optional).
    #[arg(long, conflicts_with = "levels")]
    pub questions: Option<PathBuf>,
    /// Ask only the first N requests of the sequence, cycled (request i is request
    /// i mod N: the same question, strategy, budget and seed). For a cluster on the
    /// recorded backend, which answers only what it recorded (docs/scaling.md).
    #[arg(long)]
    pub cycle: Option<u64>,
    /// Strategies and budgets, STRATEGY:BUDGET[@FLOPS][=WEIGHT],...; `default` lets the
    /// server choose, e.g. compute_optimal:16=0.7,beam_search:64@2e10=0.3.
    #[arg(long, default_value = "default:16")]
    pub mix: String,
    /// Generator + verifier token limit per query (0: none).
    #[arg(long, default_value_t = 0)]
    pub max_tokens: u64,
    /// Pin every request to this generator model (SolveRequest.model_id); default: the
    /// cluster's default model.
    #[arg(long)]
    pub model: Option<String>,
}

/// How open-loop sends are spaced.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum ArrivalKind {
    /// Exponential gaps (gamma with burstiness 1).
    Poisson,
    /// Gamma gaps with shape --burstiness.
    Gamma,
    /// Equal gaps.
    Constant,
}

#[derive(Args, Debug)]
pub struct ArrivalArgs {
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrivals: ArrivalKind,
    /// Gamma shape for --arrivals gamma: 1.0 = Poisson, < 1 burstier, > 1 more regular.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Most requests in flight; the rest wait for a slot, and that wait counts in their
    /// latency.
    #[arg(long)]
    pub max_concurrency: Option<usize>,
}

#[derive(Args, Debug)]
pub struct PhaseArgs {
    /// Length of the measured phase (after the warm-up), e.g. 60s, 2m.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Measured requests to send (warm-up requests not counted).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Warm-up before the measured phase; its requests are excluded from the figures.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// How long answers may still arrive after the last send; later ones are cancelled
    /// and count as UNFINISHED.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub grace: Duration,
    /// The time bound of the measured phase when only --requests is given.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub max_time: Duration,
}

#[derive(Args, Debug)]
pub struct OutputArgs {
    /// Latency SLO, e.g. 10s: goodput counts correct answers within it.
    #[arg(long, value_parser = parse_duration)]
    pub slo: Option<Duration>,
    /// The latency percentile the SLO applies to.
    #[arg(long, default_value_t = 99.0)]
    pub slo_percentile: f64,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write one JSON line per request here.
    #[arg(long)]
    pub records: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Open loop: requests per second.
    #[arg(
        long,
        conflicts_with = "concurrency",
        required_unless_present = "concurrency"
    )]
    pub rate: Option<f64>,
    /// Closed loop: requests in flight at all times.
    #[arg(long)]
    pub concurrency: Option<usize>,
    #[command(flatten)]
    pub arrivals: ArrivalArgs,
    #[command(flatten)]
    pub phase: PhaseArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The rates to try, rising, requests per second (or --from/--to/--step).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["from", "to", "step"])]
    pub rates: Option<Vec<f64>>,
    #[arg(long, requires_all = ["to", "step"])]
    pub from: Option<f64>,
    #[arg(long, requires_all = ["from", "step"])]
    pub to: Option<f64>,
    #[arg(long, requires_all = ["from", "to"])]
    pub step: Option<f64>,
    /// A step also breaks the SLO when more than this share of its requests fail.
    #[arg(long, default_value_t = 0.01)]
    pub max_error_rate: f64,
    #[command(flatten)]
    pub arrivals: ArrivalArgs,
    #[command(flatten)]
    pub phase: PhaseArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The baseline report (--json of a run or a sweep).
    pub a: PathBuf,
    /// The report compared with it.
    pub b: PathBuf,
}

/// `90`, `1.5s`, `250ms`, `2m`, `1h`: seconds when no unit is given.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 250ms, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("{text:?}: unknown unit {u:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{text:?}: {e}"))
}

impl ArrivalArgs {
    fn arrivals(&self) -> anyhow::Result<Arrivals> {
        anyhow::ensure!(
            self.burstiness == 1.0 || self.arrivals == ArrivalKind::Gamma,
            "--burstiness applies to --arrivals gamma"
        );
        Ok(match self.arrivals {
            ArrivalKind::Poisson => Arrivals::POISSON,
            ArrivalKind::Gamma => Arrivals::Gamma {
                burstiness: self.burstiness,
            },
            ArrivalKind::Constant => Arrivals::Constant,
        })
    }

    fn open(&self, rate: f64) -> anyhow::Result<Loop> {
        Ok(Loop::Open {
            rate,
            arrivals: self.arrivals()?,
            max_concurrency: self.max_concurrency,
        })
    }
}

impl PhaseArgs {
    fn plan(&self, mode: Loop, seed: u64) -> anyhow::Result<Plan> {
        let plan = Plan {
            mode,
            duration: self.duration,
            requests: self.requests,
            warmup: self.warmup,
            grace: self.grace,
            max_time: self.max_time,
            seed,
        };
        plan.validate()?;
        Ok(plan)
    }
}

impl WorkloadArgs {
    pub fn workload(&self) -> anyhow::Result<Workload> {
        let questions = match &self.questions {
            Some(path) => Questions::File {
                items: workload::load_jsonl(path)?,
            },
            None => Questions::Arith {
                levels: workload::parse_levels(&self.levels)?,
            },
        };
        anyhow::ensure!(
            self.max_tokens == 0 || self.max_tokens >= 64,
            "--max-tokens must be 0 (no limit) or at least 64"
        );
        anyhow::ensure!(self.cycle != Some(0), "--cycle must be at least 1");
        Ok(Workload {
            questions,
            cycle: self.cycle,
            mix: Mix::parse(&self.mix)?,
            seed: self.seed,
            max_tokens: self.max_tokens,
            model_id: self.model.clone().unwrap_or_default(),
        })
    }
}

impl TargetArgs {
    fn rpc(&self) -> Rpc {
        if self.stream {
            Rpc::SolveStream
        } else {
            Rpc::Solve
        }
    }

    pub async fn connect(&self) -> anyhow::Result<Target> {
        Target::connect(
            &self.addr,
            &self.access,
            self.connections,
            self.rpc(),
            self.timeout,
            self.protocol,
        )
        .await
    }
}

impl OutputArgs {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.slo.is_none_or(|s| !s.is_zero()),
            "--slo must be positive"
        );
        anyhow::ensure!(
            self.slo_percentile > 0.0 && self.slo_percentile <= 100.0,
            "--slo-percentile must be in (0, 100]"
        );
        Ok(())
    }
}

fn info(target: &TargetArgs, w: &Workload, plan: &Plan, out: &OutputArgs) -> RunInfo {
    RunInfo {
        target: match target.protocol {
            crate::target::Protocol::Grpc => target.addr.join(","),
            crate::target::Protocol::Openai => format!("{} (HTTP gateway)", target.addr.join(",")),
        },
        rpc: target.rpc(),
        mode: plan.mode,
        workload: w.label(),
        mix: w.mix.label(),
        warmup_s: plan.warmup.as_secs_f64(),
        duration_s: plan.duration.map(|d| d.as_secs_f64()),
        requests: plan.requests,
        slo_s: out.slo.map(|d| d.as_secs_f64()),
        slo_percentile: out.slo_percentile,
    }
}

/// `ponder-load run`.
pub async fn run_command(a: RunArgs) -> anyhow::Result<()> {
    let workload = a.workload.workload()?;
    let mode = match (a.rate, a.concurrency) {
        (Some(rate), None) => a.arrivals.open(rate)?,
        (None, Some(concurrency)) => {
            anyhow::ensure!(
                a.arrivals.max_concurrency.is_none(),
                "--max-concurrency caps an open loop; a closed loop has --concurrency"
            );
            Loop::Closed { concurrency }
        }
        _ => anyhow::bail!("give --rate (open loop) or --concurrency (closed loop)"),
    };
    let plan = a.phase.plan(mode, a.workload.seed)?;
    a.output.validate()?;
    let target = a.target.connect().await?;
    let expected = match mode {
        Loop::Open { rate, .. } => a.phase.requests.or(plan
            .duration
            .map(|d| (rate * d.as_secs_f64()).round() as u64)),
        Loop::Closed { .. } => a.phase.requests,
    };
    let progress = Progress::start("ponder-load", expected, !a.output.quiet);
    let records = crate::driver::run(&plan, &target, &workload, progress.counters.clone()).await;
    progress.finish();
    let records = records?;
    let report = Report::build(info(&a.target, &workload, &plan, &a.output), &records);
    if let Some(path) = &a.output.records {
        record::write_jsonl(path, &records)?;
    }
    if let Some(path) = &a.output.json {
        report.save(path)?;
    }
    print!("{}", crate::render::table(&report));
    Ok(())
}

/// `ponder-load sweep`.
pub async fn sweep_command(a: SweepArgs) -> anyhow::Result<()> {
    let workload = a.workload.workload()?;
    let rates = match (&a.rates, a.from, a.to, a.step) {
        (Some(r), ..) => r.clone(),
        (None, Some(from), Some(to), Some(step)) => sweep::linear_rates(from, to, step)?,
        _ => anyhow::bail!("give the rates: --rates 0.5,1,2 or --from 0.5 --to 4 --step 0.5"),
    };
    anyhow::ensure!(
        rates.iter().all(|r| r.is_finite() && *r > 0.0),
        "sweep rates must be positive"
    );
    let first = *rates
        .first()
        .ok_or_else(|| anyhow::anyhow!("--rates is empty"))?;
    let plan = a.phase.plan(a.arrivals.open(first)?, a.workload.seed)?;
    a.output.validate()?;
    anyhow::ensure!(
        a.output.slo.is_some(),
        "a sweep needs --slo (e.g. --slo 10s)"
    );
    let target = a.target.connect().await?;
    let sweep = Sweep {
        rates,
        plan,
        max_failed_share: a.max_error_rate,
        progress: !a.output.quiet,
    };
    let info = info(&a.target, &workload, &sweep.plan, &a.output);
    let mut records = Vec::new();
    let report = sweep::run(&sweep, &target, &workload, &info, &mut records).await?;
    if let Some(path) = &a.output.records {
        record::write_jsonl(path, &records)?;
    }
    if let Some(path) = &a.output.json {
        report.save(path)?;
    }
    if let Some(k) = report.knee() {
        println!("\nthe step at the knee:");
        print!("{}", crate::render::table(&k.report));
    }
    println!("\n{}", sweep::summary(&report));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_common_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn the_command_line_parses_into_a_plan() {
        let cli = Cli::try_parse_from([
            "ponder-load",
            "run",
            "--rate",
            "5",
            "--arrivals",
            "gamma",
            "--burstiness",
            "0.5",
            "--duration",
            "10s",
            "--mix",
            "compute_optimal:16=0.7,beam_search:64=0.3",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        let mode = a.arrivals.open(a.rate.unwrap()).unwrap();
        assert_eq!(
            mode,
            Loop::Open {
                rate: 5.0,
                arrivals: Arrivals::Gamma { burstiness: 0.5 },
                max_concurrency: None
            }
        );
        assert!(a.phase.plan(mode, 0).is_ok());
        assert_eq!(a.workload.workload().unwrap().mix.entries().len(), 2);
    }

    #[test]
    fn unbounded_or_contradictory_runs_are_refused() {
        assert!(Cli::try_parse_from(["ponder-load", "run", "--duration", "1s"]).is_err());
        assert!(
            Cli::try_parse_from(["ponder-load", "run", "--rate", "1", "--concurrency", "2"])
                .is_err()
        );
        let cli = Cli::try_parse_from(["ponder-load", "run", "--rate", "1"]).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        let e = a.phase.plan(a.arrivals.open(1.0).unwrap(), 0).unwrap_err();
        assert!(e.to_string().contains("--duration or --requests"), "{e}");
        let cli = Cli::try_parse_from(["ponder-load", "run", "--rate", "1", "--burstiness", "2"])
            .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert!(a.arrivals.open(1.0).is_err());
    }
}
