//! Several generator models in one cluster (docs/cluster.md, "Several models"): a
//! request runs on the model it pins, else on the default; a default with no serving
//! member is skipped with a note; a model the cluster does not serve is refused with
//! the list of the ones it does; ClusterStatus lists the models with their sizes.
//!
//! The second model is the bundled PRM served as a generator: another model id and
//! another set of weights of the same family, which is all routing looks at (its
//! samples are not good solutions, and nothing here needs them to be).

use crate::common::*;
use ponder_cli::embedded::{EmbeddedCluster, EmbeddedConfig};
use ponder_proto::v1 as pb;
use tonic::Code;

async fn two_models() -> EmbeddedCluster {
    two_models_with(None).await
}

async fn two_models_with(policy: Option<std::path::PathBuf>) -> EmbeddedCluster {
    EmbeddedCluster::start(EmbeddedConfig {
        orchestrator_addr: "127.0.0.1:0".parse().unwrap(),
        generator_model: generator_model(),
        other_generator_models: vec![verifier_model()],
        verifier_model: Some(verifier_model()),
        policy,
        generators: 1,
        etcd: vec![],
        cluster: "models".into(),
        metrics_addr: None,
        gateway_addr: None,
        control: Default::default(),
        record_calls: None,
        kv_cache_dtype: Default::default(),
        quantize: Default::default(),
    })
    .await
    .expect("the two-model cluster starts")
}

fn model_name(path: std::path::PathBuf) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Requests served so far by the generator members of `model`.
async fn served_by(c: &mut Client, model: &str) -> u64 {
    let s = c
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    s.members
        .iter()
        .filter(|m| m.role == "generator" && m.model_id == model)
        .map(|m| m.requests)
        .sum()
}

type Client = ponder_proto::v1::orchestrator_client::OrchestratorClient<tonic::transport::Channel>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_runs_on_the_model_it_pins_and_else_on_the_default() {
    let cluster = two_models().await;
    let (default, other) = (generator_model_id(), model_name(verifier_model()));
    let mut c = client(cluster.addr()).await;

    let status = c
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let generators: Vec<_> = status
        .models
        .iter()
        .filter(|m| m.role == "generator")
        .collect();
    assert_eq!(generators.len(), 2, "{:?}", status.models);
    for m in &generators {
        assert!(m.parameters > 10_000, "a real model's count: {m:?}");
        assert_eq!(m.flops_per_token, 2.0 * m.parameters as f64);
        assert_eq!((m.ready, m.serving), (1, 1), "{m:?}");
        assert_eq!(m.default, m.model_id == default, "{m:?}");
    }
    assert!(status.models.iter().any(|m| m.role == "verifier"));

    let mut req = request("47+38", 4, 1);
    req.strategy = Some(pb::Strategy {
        kind: Some(pb::strategy::Kind::Name("self_consistency".into())),
    });
    let r = c.solve(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.model_id, default);
    assert!(r.routing_notes.is_empty(), "{:?}", r.routing_notes);
    let before = served_by(&mut c, &other).await;
    assert_eq!(before, 0, "an unpinned request went to {other}");

    req.model_id = other.clone();
    let r = c.solve(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.model_id, other);
    assert!(served_by(&mut c, &other).await > before);
    let default_calls = served_by(&mut c, &default).await;
    c.solve(req.clone()).await.unwrap();
    assert_eq!(
        served_by(&mut c, &default).await,
        default_calls,
        "a request pinned to {other} called {default}"
    );

    req.model_id = "arith-gen-xxl".into();
    let e = c.solve(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("arith-gen-xxl")
            && e.message().contains(&default)
            && e.message().contains(&other),
        "{}",
        e.message()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_model_with_no_serving_member_is_skipped_with_a_note() {
    let mut cluster = two_models().await;
    let (default, other) = (generator_model_id(), model_name(verifier_model()));
    let mut c = client(cluster.addr()).await;
    cluster.generators.remove(0).stop().await;

    // The first call to the stopped node fails over nowhere (its model has no other
    // member) and ejects it; from then on the default is skipped.
    let mut req = request("47+38", 2, 3);
    req.strategy = Some(pb::Strategy {
        kind: Some(pb::strategy::Kind::Name("self_consistency".into())),
    });
    let mut failures = 0;
    let mut rerouted = None;
    for _ in 0..5 {
        match c.solve(req.clone()).await {
            Ok(r) if r.get_ref().model_id == other => {
                rerouted = Some(r.into_inner());
                break;
            }
            Ok(r) => panic!("answered by {} after it stopped", r.get_ref().model_id),
            Err(_) => failures += 1,
        }
    }
    let r = rerouted.expect("the query never moved to the serving model");
    assert!(
        failures <= 1,
        "{failures} queries failed before the default was skipped"
    );
    assert!(
        r.routing_notes
            .iter()
            .any(|n| n.contains(&default) && n.contains(&other)),
        "{:?}",
        r.routing_notes
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_optimal_probes_on_the_cheapest_model_and_runs_where_the_policy_says() {
    let (default, other) = (generator_model_id(), model_name(verifier_model()));
    // Every bin: 6 generations in all on the larger model. Under a FLOPs limit every
    // bin goes to a model this cluster does not serve.
    let on = |model: &str| {
        let c = format!(r#"{{"model": "{model}", "strategy": "best_of_n", "generations": 6}}"#);
        format!("[{c}, {c}, {c}, {c}, {c}]")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"probes": 2, "bin_edges": [0.2, 0.4, 0.6, 0.8], "table": {{"1": {}}},
                "flops_table": [{{"max_flops": 1, "row": {}}}]}}"#,
            on(&other),
            on("arith-gen-xxl")
        ),
    )
    .unwrap();
    let cluster = two_models_with(Some(path)).await;
    let mut c = client(cluster.addr()).await;
    let mut req = request("47+38", 8, 1);
    req.strategy = Some(pb::Strategy {
        kind: Some(pb::strategy::Kind::Name("compute_optimal".into())),
    });
    let r = c.solve(req.clone()).await.unwrap().into_inner();
    assert_eq!(
        (r.model_id.as_str(), r.routed_by.as_str()),
        (other.as_str(), "compute_optimal")
    );
    assert!(r.routing_notes.is_empty(), "{:?}", r.routing_notes);
    assert_eq!(r.usage.unwrap().generations, 6);
    // The probes ran on the default (the cheaper model), the rest on the other.
    assert!(served_by(&mut c, &default).await > 0);
    assert!(served_by(&mut c, &other).await > 0);

    req.budget.as_mut().unwrap().max_flops = 1e15;
    let r = c.solve(req).await.unwrap().into_inner();
    assert_eq!(r.model_id, default, "{:?}", r.routing_notes);
    assert!(
        r.routing_notes
            .iter()
            .any(|n| n.contains("arith-gen-xxl") && n.contains(&default)),
        "{:?}",
        r.routing_notes
    );
    cluster.stop().await;
}
