//! The cluster over real gRPC on 127.0.0.1: answers, budgets, streaming, bad input,
//! failover, and a client built from the proto with another gRPC stack.

use crate::common::*;
use ponder_proto::v1 as pb;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solve_answers_easy_questions() {
    let cluster = embedded(1).await;
    let mut c = client(cluster.addr()).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut right = 0;
    for i in 0..10 {
        let p = ponder_arith::task::generate(1, &mut rng);
        let r = c
            .solve(request(&p.question, 8, i))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.strategy, "weighted_best_of_n",
            "the default with a verifier"
        );
        assert!(!r.solution.is_empty());
        right += (r.answer == p.answer.to_string()) as u32;
    }
    assert!(
        right >= 9,
        "only {right}/10 level-1 questions answered correctly"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_never_exceeds_the_budget() {
    let cluster = embedded(1).await;
    let mut c = client(cluster.addr()).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let strategies = [
        "self_consistency",
        "best_of_n",
        "weighted_best_of_n",
        "beam_search:2",
        "lookahead:2",
        "dvts:2",
        "rebase",
        "revisions",
        "adaptive",
        "compute_optimal",
    ];
    // FLOPs limits come from their own stream, so the cases above stay as they were.
    let mut flops_rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let mut answered = 0;
    for case in 0..30u64 {
        let p = ponder_arith::task::generate(rng.random_range(1..=3), &mut rng);
        let generations = rng.random_range(1..=12);
        let max_tokens = if rng.random_bool(0.3) {
            0
        } else {
            rng.random_range(64..12_000)
        };
        let mut req = request(&p.question, generations, case);
        req.budget = Some(pb::Budget {
            max_generations: generations,
            max_tokens,
            // A third of the cases also have a FLOPs limit, from about one scored
            // sample's worst case on the 1.31M-parameter models up.
            max_flops: if flops_rng.random_bool(0.33) {
                flops_rng.random_range(1.1e10..6e10)
            } else {
                0.0
            },
            ..Default::default()
        });
        let max_flops = req.budget.as_ref().unwrap().max_flops;
        req.strategy = Some(pb::Strategy {
            kind: Some(pb::strategy::Kind::Name(
                strategies[case as usize % strategies.len()].into(),
            )),
        });
        match c.solve(req).await {
            Ok(r) => {
                let u = r.into_inner().usage.unwrap();
                assert!(
                    u.generations >= 1 && u.generations <= generations,
                    "case {case}: {u:?}"
                );
                if max_tokens > 0 {
                    assert!(
                        u.generator_tokens + u.verifier_tokens <= max_tokens,
                        "case {case}: {u:?} over {max_tokens} tokens"
                    );
                }
                if max_flops > 0.0 {
                    assert!(
                        u.flops <= max_flops,
                        "case {case}: {u:?} over {max_flops:e}"
                    );
                }
                assert!(
                    u.generator_flops > 0.0
                        && (u.generator_flops + u.verifier_flops - u.flops).abs() < 1.0,
                    "case {case}: {u:?}"
                );
                answered += 1;
            }
            // A budget too small for the strategy is refused, with a reason.
            Err(s) => {
                assert_eq!(s.code(), Code::InvalidArgument, "case {case}: {s:?}");
                assert!(
                    s.message().contains("budget") || s.message().contains("generations"),
                    "{}",
                    s.message()
                );
            }
        }
    }
    assert!(answered >= 20, "only {answered}/30 budgets were usable");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ends_with_what_solve_returns() {
    let cluster = embedded(1).await;
    let mut c = client(cluster.addr()).await;
    let req = request("(47+38)*3-19", 16, 42);
    let solved = c.solve(req.clone()).await.unwrap().into_inner();
    let mut stream = c.solve_stream(req).await.unwrap().into_inner();
    let mut events = vec![];
    while let Some(ev) = stream.message().await.unwrap() {
        events.push(ev);
    }
    let last = events
        .last()
        .unwrap()
        .r#final
        .clone()
        .expect("a final event");
    assert!(
        events.len() >= 3,
        "16 generations in waves of 8 give 2 progress events + final"
    );
    assert_eq!(last.answer, solved.answer);
    assert_eq!(last.solution, solved.solution);
    assert_eq!(last.score, solved.score);
    // Token counts may differ: the second run hits the prefix caches (less compute).
    let (a, b) = (last.usage.unwrap(), solved.usage.unwrap());
    assert_eq!(
        (a.generations, a.generator_tokens),
        (b.generations, b.generator_tokens)
    );
    // Compute only grows from event to event.
    let gens: Vec<u32> = events
        .iter()
        .map(|e| e.usage.unwrap().generations)
        .collect();
    assert!(gens.windows(2).all(|w| w[0] <= w[1]), "{gens:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beam_search_and_compute_optimal_over_grpc() {
    let cluster = embedded(2).await;
    let mut c = client(cluster.addr()).await;
    let mut beam = request("(47+38)*3-19", 8, 1);
    beam.strategy = Some(pb::Strategy {
        kind: Some(pb::strategy::Kind::BeamSearch(pb::BeamSearch {
            beam_width: 2,
            max_rounds: 0,
        })),
    });
    let r = c.solve(beam).await.unwrap().into_inner();
    assert_eq!(r.strategy, "beam_search:2");
    assert_eq!(r.answer, "236", "{}", r.solution);
    assert_eq!(r.usage.unwrap().generations, 8, "beam search costs N");
    let mut co = request("47+38", 16, 2);
    co.strategy = Some(pb::Strategy {
        kind: Some(pb::strategy::Kind::ComputeOptimal(pb::ComputeOptimal {})),
    });
    let r = c.solve(co).await.unwrap().into_inner();
    assert_eq!(r.routed_by, "compute_optimal");
    assert_eq!(r.answer, "85");
    assert!(r.usage.unwrap().generations <= 16);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_argument_with_a_reason() {
    let cluster = embedded(1).await;
    let mut c = client(cluster.addr()).await;
    let ok = request("1+2", 4, 0);
    let with = |f: &dyn Fn(&mut pb::SolveRequest)| {
        let mut r = ok.clone();
        f(&mut r);
        r
    };
    let budget = |g: u32, t: u64| {
        Some(pb::Budget {
            max_generations: g,
            max_tokens: t,
            max_flops: 0.0,
            min_generations: 0,
        })
    };
    let named = |n: &str| {
        Some(pb::Strategy {
            kind: Some(pb::strategy::Kind::Name(n.into())),
        })
    };
    let table: Vec<(pb::SolveRequest, &str)> = vec![
        (with(&|r| r.question = String::new()), "question is empty"),
        (with(&|r| r.question = "   ".into()), "question is empty"),
        (with(&|r| r.question = "1".repeat(5000)), "the limit is"),
        (with(&|r| r.question = "1+1\n2+2".into()), "single line"),
        (with(&|r| r.budget = budget(0, 0)), "budget.max_generations"),
        (
            with(&|r| r.budget = budget(1_000_000, 0)),
            "budget.max_generations",
        ),
        (with(&|r| r.budget = budget(4, 3)), "budget.max_tokens"),
        (
            with(&|r| r.budget = budget(4, u64::MAX)),
            "budget.max_tokens",
        ),
        (with(&|r| r.budget = budget(4, 64)), "too small"),
        (
            with(&|r| {
                r.budget = Some(pb::Budget {
                    max_generations: 4,
                    max_tokens: 0,
                    max_flops: -5.0,
                    ..Default::default()
                })
            }),
            "budget.max_flops",
        ),
        (
            with(&|r| {
                r.budget = Some(pb::Budget {
                    max_generations: 4,
                    max_tokens: 0,
                    max_flops: f64::NAN,
                    ..Default::default()
                })
            }),
            "budget.max_flops",
        ),
        (
            with(&|r| {
                r.budget = Some(pb::Budget {
                    max_generations: 4,
                    min_generations: 5,
                    ..Default::default()
                })
            }),
            "budget.min_generations",
        ),
        (
            with(&|r| {
                r.budget = Some(pb::Budget {
                    max_generations: 4,
                    max_tokens: 0,
                    max_flops: 1e6,
                    min_generations: 0,
                })
            }),
            "too small",
        ),
        (with(&|r| r.strategy = named("mcts")), "unknown strategy"),
        (
            with(&|r| r.strategy = named("beam_search:0")),
            "positive integer",
        ),
        (
            with(&|r| {
                r.strategy = Some(pb::Strategy {
                    kind: Some(pb::strategy::Kind::Lookahead(pb::Lookahead {
                        beam_width: 2,
                        depth: 99,
                        max_rounds: 0,
                    })),
                })
            }),
            "depth must be in",
        ),
        (
            with(&|r| {
                r.strategy = Some(pb::Strategy {
                    kind: Some(pb::strategy::Kind::Adaptive(pb::AdaptiveStopping {
                        wave_size: 4,
                        stop_share: 0.2,
                        majority: false,
                    })),
                })
            }),
            "stop_share",
        ),
        (with(&|r| r.aggregation = "median".into()), "aggregation"),
        (with(&|r| r.temperature = -1.0), "temperature"),
        (with(&|r| r.temperature = f32::NAN), "temperature"),
        (with(&|r| r.temperature = 9.0), "temperature"),
    ];
    for (req, expect) in table {
        let q = req.question.chars().take(20).collect::<String>();
        let s = c.solve(req).await.expect_err(&q);
        assert_eq!(s.code(), Code::InvalidArgument, "{q:?}: {s:?}");
        assert!(
            s.message().contains(expect),
            "{q:?}: {:?} lacks {expect:?}",
            s.message()
        );
        // google.rpc.BadRequest names the field where the message starts with one.
        use tonic_types::StatusExt;
        let violation = &s
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations[0];
        if expect.starts_with("budget.") {
            assert_eq!(violation.field, expect, "{q:?}");
        }
    }
    // The server is still fine.
    assert!(c.solve(ok).await.is_ok());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_serving_and_status_lists_members() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let cluster = embedded(2).await;
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", cluster.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let h = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: "ponder.v1.Orchestrator".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, 1, "SERVING");
    let mut c = client(cluster.addr()).await;
    let s = c
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.discovery, "static");
    let roles: Vec<_> = s.members.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["generator", "generator", "verifier"]);
    assert!(s.members.iter().all(|m| m.health == "serving"));
    // Prometheus text on /metrics, with the call just made counted.
    c.solve(request("1+2", 2, 0)).await.unwrap();
    let m = cluster
        .metrics
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let body = http_get(m, "/metrics").await;
    assert!(
        body.contains(
            "ponder_requests_total{role=\"orchestrator\",method=\"Solve\",code=\"OK\"} 1"
        ),
        "{body}"
    );
    assert!(body.contains("ponder_request_duration_seconds_bucket"));
    assert!(body.contains("ponder_query_generations_count"));
    // What a node is sized by: load + warm-up time and compute threads, per role.
    assert!(
        body.contains("ponder_model_load_seconds{role=\"generator\"}"),
        "{body}"
    );
    assert!(
        body.contains("ponder_worker_threads{role=\"verifier\"} 1"),
        "{body}"
    );
    cluster.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_killed_mid_batch_fails_no_query() {
    let gen = generator_model();
    let prm = verifier_model();
    let (mut g1, a1) = spawn_node("generator", &["--model", gen.to_str().unwrap()]);
    let (_g2, a2) = spawn_node("generator", &["--model", gen.to_str().unwrap()]);
    let (_v, av) = spawn_node("verifier", &["--model", prm.to_str().unwrap()]);
    let mut args = ponder_orchestrator::OrchestratorArgs::new(Default::default());
    args.generators = vec![a1, a2];
    args.verifiers = vec![av];
    let metrics = ponder_cluster::metrics::Metrics::new();
    let o = ponder_orchestrator::start(args, metrics.clone())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || o
            .registry
            .ready(ponder_cluster::Role::Generator)
            == 2)
        .await
    );
    let addr = o.node.addr;
    let mut tasks = vec![];
    for i in 0..12u64 {
        tasks.push(tokio::spawn(async move {
            let mut c = client(addr).await;
            // Twelve questions, so that affinity spreads them over both generators; 256
            // samples each at a fixed budget (an adaptive one would cut them under this
            // burst), several seconds of sampling to kill a generator in.
            let q = format!("({}+{})*{}-{}", 10 + i, 20 + 2 * i, 3 + i % 4, i);
            let mut req = request(&q, 256, i);
            req.strategy = Some(pb::Strategy {
                kind: Some(pb::strategy::Kind::SelfConsistency(pb::SelfConsistency {})),
            });
            req.budget_mode = pb::BudgetMode::Fixed as i32;
            c.solve(req).await
        }));
    }
    // Killed once the burst's generate calls are under way (not after a fixed time: on
    // a fast engine a small burst is over in a few hundred milliseconds).
    use crate::metrics::sample;
    let routed = |t: &str| {
        ["preferred", "other"]
            .iter()
            .filter_map(|r| {
                let result = format!("result=\"{r}\"");
                sample(
                    t,
                    "ponder_affinity_routes_total",
                    &["role=\"generator\"", &result],
                )
            })
            .sum::<f64>()
    };
    assert!(
        eventually(Duration::from_secs(10), || routed(&metrics.render())
            >= 24.0)
        .await,
        "the burst's generate calls never started"
    );
    g1.0.kill().unwrap(); // SIGKILL
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.is_ok(), "a query failed after a generator died: {r:?}");
    }
    // The failover shows: the dead member's calls were retried and it was ejected.
    let t = metrics.render();
    let gen = "role=\"generator\"";
    assert!(
        sample(&t, "ponder_retries_total", &[gen]).unwrap_or(0.0) >= 1.0,
        "{t}"
    );
    assert!(
        sample(&t, "ponder_ejections_total", &[gen]).unwrap_or(0.0) >= 1.0,
        "{t}"
    );
    o.stop().await;
}

/// The contract is usable outside Rust: Python grpcio stubs generated from proto/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_can_solve() {
    let cluster = embedded(1).await;
    let addr = cluster.addr().to_string();
    let script = |name: &'static str| python_script(name, vec![addr.clone()]);
    let stdout = script("solve_client.py").await;
    assert!(stdout.contains("answer 85"), "{stdout}");
    assert!(stdout.contains("INVALID_ARGUMENT"), "{stdout}");

    // The stock reflection client (v1alpha) reads the API without any .proto file.
    let stdout = script("reflection_client.py").await;
    for line in [
        "service ponder.v1.Orchestrator",
        "service grpc.health.v1.Health",
        "method Solve ponder.v1.SolveRequest ponder.v1.SolveResponse",
        "method ClusterStatus ponder.v1.ClusterStatusRequest ponder.v1.ClusterStatusResponse",
    ] {
        assert!(stdout.contains(line), "{line:?} not in {stdout}");
    }
    cluster.stop().await;
}

/// At the deadline the orchestrator answers with the best answer so far, flagged
/// partial, before the client gives up; a strict request fails instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_gives_a_partial_answer_unless_strict() {
    let cluster = embedded(1).await;
    let mut c = client(cluster.addr()).await;
    // Far too many samples for the deadline, of solutions long enough (about 300
    // tokens) that even the smallest generator cannot finish them in time. Hot, so
    // that the samples part at once: at the default temperature most of them are
    // twins (docs/engine.md) and 1024 finish in about 3 s.
    let question = LONG_QUESTION;
    let ask = |strict: bool| {
        let mut r = request(question, 1024, 3);
        r.strategy = Some(pb::Strategy {
            kind: Some(pb::strategy::Kind::Name("self_consistency".into())),
        });
        r.temperature = 2.0;
        r.strict = strict;
        let mut req = tonic::Request::new(r);
        req.set_timeout(Duration::from_secs(4));
        req
    };
    let start = std::time::Instant::now();
    let r = c.solve(ask(false)).await.unwrap().into_inner();
    let took = start.elapsed();
    assert!(r.partial, "1024 samples cannot finish in 4 s here: {r:?}");
    assert!(!r.answer.is_empty(), "{r:?}");
    let used = r.usage.unwrap().generations;
    assert!((1..1024).contains(&used), "{used} generations");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    let e = c.solve(ask(true)).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("strict"), "{}", e.message());
    cluster.stop().await;
}

/// A client that cancels stops its query's work on every node within a second: the
/// generator and the verifier stop producing tokens and drop the query's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_query_stops_work_on_every_node_within_a_second() {
    let cluster = embedded(1).await;
    let generator = cluster.generators[0].worker.get().unwrap().clone();
    let verifier = cluster
        .verifier
        .as_ref()
        .unwrap()
        .worker
        .get()
        .unwrap()
        .clone();
    let tokens = || async {
        let (g, v) = (
            generator.stats().await.unwrap(),
            verifier.stats().await.unwrap(),
        );
        g.generated_tokens + g.prompt_tokens + v.scored_tokens
    };
    let addr = cluster.addr();
    let query = tokio::spawn(async move {
        let mut c = client(addr).await;
        // Hot, so that few samples are twins and the query outlasts the wait below.
        let mut r = request("(958*47-3076)*29+8841", 1024, 1);
        r.temperature = 2.0;
        c.solve(r).await
    });
    let before = tokens().await;
    let started = std::time::Instant::now();
    while tokens().await == before {
        assert!(started.elapsed() < Duration::from_secs(20), "no work began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let working = tokens().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokens().await > working,
        "the query was not working when cancelled"
    );
    // Cancel: dropping the call resets its HTTP/2 stream.
    let mut last = tokens().await;
    query.abort();
    let cancelled = std::time::Instant::now();
    let mut last_change = Duration::ZERO;
    while cancelled.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = tokens().await;
        if now != last {
            last = now;
            last_change = cancelled.elapsed();
        }
    }
    let idle = generator.queue_depth() + verifier.queue_depth();
    println!(
        "work stopped {:.0} ms after the cancel",
        last_change.as_secs_f64() * 1e3
    );
    assert!(
        last_change < Duration::from_secs(1),
        "nodes kept working for {last_change:?} after the cancel"
    );
    assert_eq!(idle, 0, "requests still queued on the nodes");
    cluster.stop().await;
}

/// Input the model cannot take, and a message over the size limit: each gets a clear
/// error and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_the_model_cannot_take_gets_a_clear_error() {
    let cluster = embedded(1).await;
    let mut c = client(cluster.addr()).await;
    let long = format!("1{}", "+1".repeat(2000));
    for (question, expect) in [("12+é😀", "character"), (long.as_str(), "context")] {
        let s = c.solve(request(question, 2, 0)).await.expect_err(question);
        println!("{:?}: {}", s.code(), s.message());
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains(expect), "{s:?} lacks {expect:?}");
    }
    let huge = request(&"1".repeat(5 << 20), 2, 0);
    let s = c.solve(huge).await.expect_err("5 MiB");
    println!("{:?}: {}", s.code(), s.message());
    assert!(
        matches!(
            s.code(),
            Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
        ),
        "{s:?}"
    );
    assert!(c.solve(request("1+2", 2, 0)).await.is_ok());
    cluster.stop().await;
}
