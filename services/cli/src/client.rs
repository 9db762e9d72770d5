//! Client commands: `ponder solve`, `ponder status`, and the `--demo` questions.
//!
//! They dial with `ponder_cluster::connect::ConnectArgs`: plaintext by default, TLS
//! with `--tls-ca` (and a client certificate with `--tls-cert`/`--tls-key`), and an
//! API key with `--token` / `PONDER_TOKEN` (docs/security.md).

use ponder_cluster::connect::{BearerToken, ConnectArgs};
use ponder_cluster::BoxedFuture;
use ponder_proto::v1 as pb;
use ponder_proto::v1::orchestrator_client::OrchestratorClient;
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// An orchestrator client that sends the configured token with every call.
pub type Client = OrchestratorClient<InterceptedService<Channel, BearerToken>>;

/// A plaintext client without a token (the embedded cluster, benchmarks).
pub fn connect<'a>(addr: &'a str) -> BoxedFuture<'a, anyhow::Result<Client>> {
    Box::pin(async move { connect_with(addr, &ConnectArgs::default()).await })
}

pub fn connect_with<'a>(
    addr: &'a str,
    access: &'a ConnectArgs,
) -> BoxedFuture<'a, anyhow::Result<Client>> {
    Box::pin(async move {
        let endpoint = access
            .endpoint(addr)
            .map_err(|e| crate::exit::usage(format!("{e:#}")))?;
        let url = endpoint.uri().to_string();
        let channel = endpoint.connect().await.map_err(|e| {
            crate::exit::transport(format!(
                "cannot reach the orchestrator at {url}: {}",
                ponder_cluster::connect::error_chain(&e)
            ))
        })?;
        Ok(OrchestratorClient::with_interceptor(
            channel,
            access.bearer()?,
        ))
    })
}

/// A solve request as the CLI builds it.
pub fn request(
    question: &str,
    strategy: Option<&str>,
    budget: u32,
    max_tokens: u64,
    seed: u64,
) -> pb::SolveRequest {
    pb::SolveRequest {
        question: question.to_string(),
        budget: Some(pb::Budget {
            max_generations: budget,
            max_tokens,
            max_flops: 0.0,
            min_generations: 0,
        }),
        strategy: strategy.map(|s| pb::Strategy {
            kind: Some(pb::strategy::Kind::Name(s.to_string())),
        }),
        seed,
        temperature: 0.0,
        aggregation: String::new(),
        strict: false,
        model_id: String::new(),
        budget_mode: pb::BudgetMode::Unspecified.into(),
    }
}

pub fn usage_line(u: &pb::Usage) -> String {
    format!(
        "{} generations, {} generator + {} verifier tokens, {:.2e} FLOPs ({:.2e} generator + {:.2e} verifier)",
        u.generations,
        u.generator_tokens,
        u.verifier_tokens,
        u.flops,
        u.generator_flops,
        u.verifier_flops
    )
}

pub fn print_response(r: &pb::SolveResponse, elapsed: Duration) {
    println!(
        "answer:    {}",
        if r.answer.is_empty() {
            "(none)"
        } else {
            &r.answer
        }
    );
    println!("score:     {:.3} ({})", r.score, r.strategy);
    if !r.model_id.is_empty() {
        println!("model:     {}", r.model_id);
    }
    for note in &r.routing_notes {
        println!("routing:   {note}");
    }
    println!(
        "compute:   {}",
        r.usage.as_ref().map(usage_line).unwrap_or_default()
    );
    if r.budget_granted > 0 {
        println!(
            "budget:    {} generations granted ({}, {})",
            r.budget_granted,
            crate::json::budget_mode_name(r.budget_mode),
            r.budget_reason
        );
    }
    println!(
        "latency:   {:.3} s{}",
        elapsed.as_secs_f64(),
        if r.partial {
            " (partial: the deadline stopped the search early)"
        } else {
            ""
        }
    );
    println!("solution:");
    for line in r.solution.lines() {
        println!("  {line}");
    }
}

/// How `ponder solve` and `ponder status` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    /// One JSON object per line (`crate::json`).
    Json,
}

/// `ponder solve`: one question, optionally streaming.
pub fn solve<'a>(
    addr: &'a str,
    access: &'a ConnectArgs,
    req: pb::SolveRequest,
    stream: bool,
    timeout: Duration,
    output: Output,
) -> BoxedFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let mut client = connect_with(addr, access).await?;
        let start = Instant::now();
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        if !stream {
            let r = client
                .solve(request)
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                Output::Text => print_response(&r, start.elapsed()),
                Output::Json => println!("{}", crate::json::solve_response(&r)),
            }
            return Ok(());
        }
        let mut events = client
            .solve_stream(request)
            .await
            .map_err(status_error)?
            .into_inner();
        while let Some(ev) = events.message().await.map_err(status_error)? {
            if let Some(fin) = ev.r#final {
                match output {
                    Output::Text => print_response(&fin, start.elapsed()),
                    Output::Json => println!("{}", crate::json::solve_response(&fin)),
                }
                return Ok(());
            }
            if output == Output::Json {
                println!("{}", crate::json::event(&ev));
                continue;
            }
            println!(
                "[{:>7.3} s] best so far: {:<8} score {:.3}  ({})",
                start.elapsed().as_secs_f64(),
                if ev.best_answer.is_empty() {
                    "-"
                } else {
                    &ev.best_answer
                },
                ev.best_score,
                ev.usage.as_ref().map(usage_line).unwrap_or_default()
            );
        }
        anyhow::bail!("the stream ended without a final result")
    })
}

/// The status with the causes of a transport failure (a TLS alert, a reset), and a
/// hint when the likely cause is a plaintext client at a TLS port; its exit status
/// follows the code (`crate::exit`), a transport failure reported as INTERNAL or
/// UNKNOWN included.
fn status_error(s: tonic::Status) -> anyhow::Error {
    let mut exit = crate::exit::exit_of(s.code());
    if std::error::Error::source(&s).is_some()
        && matches!(s.code(), tonic::Code::Internal | tonic::Code::Unknown)
    {
        exit = crate::exit::Exit::Transport;
    }
    let mut text = format!(
        "{}: {}",
        ponder_cluster::metrics::code_name(s.code()),
        s.message()
    );
    let mut source = std::error::Error::source(&s);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if s.code() == tonic::Code::Internal && s.message().contains("h2 protocol error") {
        text.push_str(" (if the server serves TLS, give --tls-ca)");
        exit = crate::exit::Exit::Transport;
    }
    crate::exit::Failure {
        exit,
        message: text,
    }
    .into()
}

/// `ponder status`: members, health and load.
pub fn status<'a>(
    addr: &'a str,
    access: &'a ConnectArgs,
    output: Output,
) -> BoxedFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let mut client = connect_with(addr, access).await?;
        let s = client
            .cluster_status(pb::ClusterStatusRequest {})
            .await
            .map_err(status_error)?
            .into_inner();
        if output == Output::Json {
            println!("{}", crate::json::status(&s));
            return Ok(());
        }
        println!("cluster {} (discovery: {})", s.cluster, s.discovery);
        println!(
            "{:<10} {:<36} {:<22} {:<12} {:<11} {:>9} {:>9} {:>8}",
            "ROLE", "INSTANCE", "ADDRESS", "MODEL", "HEALTH", "IN-FLIGHT", "REQUESTS", "FAILURES"
        );
        for m in s.members {
            println!(
                "{:<10} {:<36} {:<22} {:<12} {:<11} {:>9} {:>9} {:>8}",
                m.role,
                m.instance_id,
                if m.address.is_empty() {
                    "-"
                } else {
                    &m.address
                },
                if m.engine == "recorded" {
                    format!("{} (recorded)", m.model_id)
                } else {
                    m.model_id.clone()
                },
                m.health,
                m.in_flight,
                m.requests,
                m.failures
            );
        }
        println!();
        println!(
            "{:<10} {:<16} {:>12} {:>14} {:>6} {:>8} {:>8}",
            "ROLE", "MODEL", "PARAMETERS", "FLOPS/TOKEN", "READY", "SERVING", "DEFAULT"
        );
        for m in s.models {
            println!(
                "{:<10} {:<16} {:>12} {:>14.3e} {:>6} {:>8} {:>8}",
                m.role,
                m.model_id,
                m.parameters,
                m.flops_per_token,
                m.ready,
                m.serving,
                if m.default { "yes" } else { "" }
            );
        }
        Ok(())
    })
}

/// Sample questions for `ponder up --demo`: one per level, fixed so runs compare.
pub const DEMO_QUESTIONS: [&str; 6] = [
    "47+38",
    "85*3-19",
    "(47+38)*3-19",
    "12*(7+6)-45+3",
    "(9+14)*3-(58-29)+6",
    "2*(31+9)-17+6*4-8",
];

/// Solves the demo questions and prints question, answer, correctness and compute.
pub fn demo<'a>(
    addr: &'a str,
    budget: u32,
    strategy: Option<&'a str>,
) -> BoxedFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let mut client = connect(addr).await?;
        println!(
            "{:<22} {:>7} {:>7} {:>4} {:>6} {:>5} {:>8} {:>8}",
            "QUESTION", "ANSWER", "TRUE", "OK", "SCORE", "GENS", "TOKENS", "LATENCY"
        );
        let mut correct = 0;
        for (i, q) in DEMO_QUESTIONS.iter().enumerate() {
            let truth = ponder_arith::solution::solve(q)
                .map_err(|e| anyhow::anyhow!("demo question {q}: {e}"))?
                .answer;
            let start = Instant::now();
            let r = client
                .solve(request(q, strategy, budget, 0, i as u64))
                .await
                .map_err(status_error)?
                .into_inner();
            let ok = r.answer == truth.to_string();
            correct += ok as usize;
            let u = r.usage.unwrap_or_default();
            println!(
                "{:<22} {:>7} {:>7} {:>4} {:>6.3} {:>5} {:>8} {:>7.2}s",
                q,
                if r.answer.is_empty() { "-" } else { &r.answer },
                truth,
                if ok { "yes" } else { "no" },
                r.score,
                u.generations,
                u.generator_tokens + u.verifier_tokens,
                start.elapsed().as_secs_f64()
            );
        }
        println!(
            "{correct}/{} correct (strategy {}, budget {budget} generations per question)",
            DEMO_QUESTIONS.len(),
            strategy.unwrap_or("default")
        );
        Ok(())
    })
}
