//! The short CI form of the scale harness (docs/scaling.md): a real run (weighted
//! best-of-4 on 192 questions) is recorded, then
//! 8 recorded generators, 2 recorded verifiers and 2 orchestrators find each other
//! through a real etcd and serve 30 s of concurrent load spread over both orchestrators.
//! Nothing may fail, and no generator may serve more than 1.5 times the mean calls.

use crate::common::*;
use crate::metrics::sample;
use futures::StreamExt;
use ponder_cli::embedded::{recording_dir, EmbeddedCluster, EmbeddedConfig};
use ponder_cluster::metrics::Metrics;
use ponder_cluster::node::NodeArgs;
use ponder_orchestrator::OrchestratorArgs;
use ponder_proto::v1 as pb;
use ponder_worker::node::{EngineChoice, ModelArgs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GENERATORS: usize = 8;
const VERIFIERS: usize = 2;
const ORCHESTRATORS: usize = 2;
/// Distinct recorded queries: the load cycles through them. Affinity hashes each to a
/// generator, so few distinct queries on lightly loaded nodes would measure the luck of
/// the hash, not the routing (docs/scaling.md, "Balance").
const QUERIES: usize = 192;
/// 16 per orchestrator: within its per-client limit (32), and enough calls in flight
/// that the routing's load bound is what keeps the generators even.
const CLIENTS: usize = 32;
const LOAD: Duration = Duration::from_secs(30);

/// Weighted best-of-4: one generate and one score call per query, cheap to record.
fn query(question: &str, seed: u64) -> pb::SolveRequest {
    let mut r = request(question, 4, seed);
    r.strategy = Some(pb::Strategy {
        kind: Some(pb::strategy::Kind::Name("weighted_best_of_n".into())),
    });
    r.budget_mode = pb::BudgetMode::Fixed as i32;
    r
}

/// The latency fit of this machine that the harness ships for a recording directory.
fn shipped_fit(dir: &Path) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench/results/scaling/latency")
        .join(dir.file_name().unwrap())
        .join("latency.json")
}

fn node_args(etcd: &Etcd, id: String) -> NodeArgs {
    NodeArgs {
        etcd: vec![etcd.client_url.clone()],
        cluster: "scale-ci".into(),
        instance_id: Some(id),
        drain_secs: 1,
        ..NodeArgs::default()
    }
}

fn recorded(dir: &Path) -> ModelArgs {
    ModelArgs {
        model: None,
        engine: EngineChoice::Recorded(dir.to_path_buf()),
        ..ModelArgs::new(dir.to_path_buf())
    }
}

fn generate_calls(metrics: &Metrics) -> f64 {
    sample(
        &metrics.render(),
        "ponder_requests_total",
        &["role=\"generator\"", "method=\"Generate\"", "code=\"OK\""],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_recorded_generators_behind_two_orchestrators_lose_nothing_and_stay_balanced() {
    // 1. Record: the real engine answers every query once.
    let tmp = tempfile::tempdir().unwrap();
    let questions: Vec<String> = ponder_arith::eval_sampler::eval_set(7, QUERIES / 6)
        .into_iter()
        .map(|p| p.question)
        .collect();
    let real = EmbeddedCluster::start(EmbeddedConfig {
        record_calls: Some(tmp.path().to_path_buf()),
        kv_cache_dtype: Default::default(),
        quantize: Default::default(),
        ..embedded_config(1)
    })
    .await
    .unwrap();
    let c = client(real.addr()).await;
    // 8 at a time: within the orchestrator's per-client limit.
    let answers: Vec<_> = futures::stream::iter(questions.iter().enumerate().map(|(i, q)| {
        let mut c = c.clone();
        let q = query(q, i as u64);
        async move { c.solve(q).await }
    }))
    .buffer_unordered(8)
    .collect()
    .await;
    assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
    real.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gen_dir = recording_dir(tmp.path(), "generator", &generator_model());
    let prm_dir = recording_dir(tmp.path(), "verifier", &verifier_model());
    for dir in [&gen_dir, &prm_dir] {
        std::fs::copy(shipped_fit(dir), dir.join("latency.json")).expect("the shipped fit");
    }

    // 2. The recorded cluster, discovered through etcd.
    let etcd = Etcd::start();
    let mut generators = Vec::new();
    for g in 0..GENERATORS {
        let metrics = Metrics::new();
        let node = ponder_generator::start(
            ponder_generator::GeneratorArgs {
                node: node_args(&etcd, format!("generator-{g}")),
                model: recorded(&gen_dir),
            },
            metrics.clone(),
        )
        .await
        .unwrap();
        generators.push((node, metrics));
    }
    let mut verifiers = Vec::new();
    for v in 0..VERIFIERS {
        verifiers.push(
            ponder_verifier::start(
                ponder_verifier::VerifierArgs {
                    node: node_args(&etcd, format!("verifier-{v}")),
                    model: recorded(&prm_dir),
                },
                Metrics::new(),
            )
            .await
            .unwrap(),
        );
    }
    let mut orchestrators = Vec::new();
    for o in 0..ORCHESTRATORS {
        let mut args = OrchestratorArgs::new(node_args(&etcd, format!("orchestrator-{o}")));
        args.allow_recorded = true;
        let orch = ponder_orchestrator::start(args, Metrics::new())
            .await
            .unwrap();
        let all_ready = eventually(Duration::from_secs(30), || {
            let snap = orch.registry.snapshot();
            snap.ready(ponder_cluster::Role::Generator) == GENERATORS
                && snap.ready(ponder_cluster::Role::Verifier) == VERIFIERS
        })
        .await;
        assert!(all_ready, "orchestrator-{o} did not see every member");
        orchestrators.push(orch);
    }

    // 3. Closed-loop load over both orchestrators for 30 s.
    let mut clients = Vec::new();
    for o in &orchestrators {
        clients.push(client(o.node.addr).await);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let questions = Arc::new(questions);
    let end = Instant::now() + LOAD;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, questions, clients) = (next.clone(), questions.clone(), clients.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut per_orchestrator = [0usize; ORCHESTRATORS];
                while Instant::now() < end {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let q = i % questions.len();
                    let mut c = clients[i % ORCHESTRATORS].clone();
                    match c.solve(query(&questions[q], q as u64)).await {
                        Ok(_) => per_orchestrator[i % ORCHESTRATORS] += 1,
                        Err(e) => failures.push(format!("{}: {e:?}", questions[q])),
                    }
                }
                (failures, per_orchestrator)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut answered = [0usize; ORCHESTRATORS];
    for t in tasks {
        let (f, per) = t.await.unwrap();
        failures.extend(f);
        for (a, p) in answered.iter_mut().zip(per) {
            *a += p;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(
        answered.iter().all(|&a| a >= 20),
        "each orchestrator should answer a share of the load: {answered:?}"
    );

    // 4. Balance: calls served per generator, max over mean.
    let calls: Vec<f64> = generators.iter().map(|(_, m)| generate_calls(m)).collect();
    let mean = calls.iter().sum::<f64>() / calls.len() as f64;
    let max = calls.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "generator calls {calls:?}: max/mean {:.2}; answered per orchestrator {answered:?}",
        max / mean
    );
    assert!(
        mean > 0.0 && max / mean <= 1.5,
        "generator calls {calls:?}: max/mean {:.2} above 1.5",
        max / mean
    );

    for o in orchestrators {
        o.stop().await;
    }
    for (g, _) in generators {
        g.stop().await;
    }
    for v in verifiers {
        v.stop().await;
    }
}
