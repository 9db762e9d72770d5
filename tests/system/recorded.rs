//! The recorded backend end to end: `ponder up --record-calls` records what its nodes
//! answer; nodes started with `--engine recorded:DIR` serve it again; an orchestrator
//! refuses them unless started with `--allow-recorded`, and then answers the recorded
//! query exactly as the real cluster did; ModelInfo, ClusterStatus and `/metrics` say
//! `recorded`; a question outside the recording is INVALID_ARGUMENT and counted.

use crate::common::*;
use crate::metrics::sample;
use ponder_cli::embedded::{recording_dir, EmbeddedCluster, EmbeddedConfig};
use ponder_cluster::metrics::Metrics;
use ponder_cluster::node::NodeArgs;
use ponder_orchestrator::OrchestratorArgs;
use ponder_proto::v1 as pb;
use ponder_proto::v1::generator_client::GeneratorClient;
use ponder_worker::node::{EngineChoice, ModelArgs};
use ponder_worker::recorded::latency::{GenerateCost, LatencyModel, ScoreCost};
use std::path::Path;
use std::time::Duration;

fn write_latency(dir: &Path, generate: Option<GenerateCost>, score: Option<ScoreCost>) {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("info.json")).unwrap()).unwrap();
    let model_id = info["model_id"].as_str().unwrap();
    LatencyModel::from_costs(model_id, generate, score)
        .save(dir)
        .unwrap();
}

fn recorded_args(dir: &Path) -> ModelArgs {
    ModelArgs {
        model: None,
        engine: EngineChoice::Recorded(dir.to_path_buf()),
        ..ModelArgs::new(dir.to_path_buf())
    }
}

fn query(question: &str) -> pb::SolveRequest {
    let mut r = request(question, 4, 11);
    r.strategy = Some(pb::Strategy {
        kind: Some(pb::strategy::Kind::Name("weighted_best_of_n".into())),
    });
    r.budget_mode = pb::BudgetMode::Fixed as i32;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_nodes_replay_a_real_cluster_only_where_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let real = EmbeddedCluster::start(EmbeddedConfig {
        record_calls: Some(tmp.path().to_path_buf()),
        kv_cache_dtype: Default::default(),
        quantize: Default::default(),
        ..embedded_config(1)
    })
    .await
    .unwrap();
    let question = "(47+38)*3-19";
    let want = client(real.addr())
        .await
        .solve(query(question))
        .await
        .unwrap()
        .into_inner();
    real.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gen_dir = recording_dir(tmp.path(), "generator", &generator_model());
    let prm_dir = recording_dir(tmp.path(), "verifier", &verifier_model());
    let fast = GenerateCost {
        call_s: 0.001,
        prefill_token_s: 1e-6,
        step_s: 1e-4,
        step_sequence_s: 1e-6,
        attention_token_s: 0.0,
    };
    write_latency(&gen_dir, Some(fast), None);
    write_latency(
        &prm_dir,
        None,
        Some(ScoreCost {
            call_s: 0.001,
            token_s: 1e-6,
            candidate_s: 0.0,
            attention_token_s: 0.0,
        }),
    );

    let metrics = Metrics::new();
    let generator = ponder_generator::start(
        ponder_generator::GeneratorArgs {
            node: NodeArgs::default(),
            model: recorded_args(&gen_dir),
        },
        metrics.clone(),
    )
    .await
    .unwrap();
    let verifier = ponder_verifier::start(
        ponder_verifier::VerifierArgs {
            node: NodeArgs::default(),
            model: recorded_args(&prm_dir),
        },
        metrics.clone(),
    )
    .await
    .unwrap();
    let info = GeneratorClient::connect(format!("http://{}", generator.node.addr))
        .await
        .unwrap()
        .model_info(pb::ModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.engine, "recorded");
    assert_eq!(info.model_id, generator_model_id());
    let text = metrics.render();
    assert_eq!(
        sample(
            &text,
            "ponder_worker_engine",
            &["role=\"generator\"", "engine=\"recorded\""]
        ),
        Some(1.0),
        "{text}"
    );

    let orchestrator = |allow: bool, metrics: Metrics| {
        let mut args = OrchestratorArgs::new(NodeArgs::default());
        args.generators = vec![generator.node.addr.to_string()];
        args.verifiers = vec![verifier.node.addr.to_string()];
        args.allow_recorded = allow;
        ponder_orchestrator::start(args, metrics)
    };

    // Not allowed: both members are refused and counted, and with no generator it may
    // use, the orchestrator never turns SERVING (its start waits for one).
    let refusing_metrics = Metrics::new();
    let refusing = tokio::spawn(orchestrator(false, refusing_metrics.clone()));
    let refused = eventually(Duration::from_secs(20), || {
        sample(
            &refusing_metrics.render(),
            "ponder_refusals_total",
            &["what=\"member\"", "reason=\"recorded\""],
        ) == Some(2.0)
    })
    .await;
    assert!(refused, "{}", refusing_metrics.render());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !refusing.is_finished(),
        "an orchestrator served refused members"
    );
    refusing.abort();

    // Allowed: the recorded query comes back exactly as the real cluster answered it.
    let allowing = orchestrator(true, Metrics::new()).await.unwrap();
    let mut c = client(allowing.node.addr).await;
    let ready = eventually(Duration::from_secs(20), || {
        let snap = allowing.registry.snapshot();
        snap.ready(ponder_cluster::Role::Generator) == 1
            && snap.ready(ponder_cluster::Role::Verifier) == 1
    })
    .await;
    assert!(ready);
    let got = c.solve(query(question)).await.unwrap().into_inner();
    assert_eq!(
        (&got.answer, &got.solution, got.score, &got.answers),
        (&want.answer, &want.solution, want.score, &want.answers)
    );
    let (u, w) = (got.usage.unwrap(), want.usage.unwrap());
    assert_eq!(
        (u.generations, u.generator_tokens, u.verifier_tokens),
        (w.generations, w.generator_tokens, w.verifier_tokens)
    );
    let status = c
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.members.len() == 2 && status.members.iter().all(|m| m.engine == "recorded"),
        "{:?}",
        status.members
    );

    // Outside the recording: a clear refusal, counted on the node.
    let err = c.solve(query("1+1")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("not in the recording"),
        "{}",
        err.message()
    );
    let counted = eventually(Duration::from_secs(5), || {
        sample(
            &metrics.render(),
            "ponder_refusals_total",
            &["what=\"call\"", "reason=\"not_recorded\""],
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(counted, "{}", metrics.render());
    allowing.stop().await;
    generator.stop().await;
    verifier.stop().await;
}
