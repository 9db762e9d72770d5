//! `cluster-bench`: end-to-end Solve latency on the embedded cluster, and the
//! orchestrator's overhead, against the same search run in-process in the same run.
//!
//! For each budget, the same questions and seeds are solved (1) over gRPC through the
//! embedded cluster (orchestrator -> generator/verifier servers on loopback) and (2) by
//! `ponder_search::solve` calling the engine's model workers directly. Printed: mean and
//! p50 latency of both, their ratio, and the share of the cluster's latency not spent
//! inside generate/score calls (`1 - calls_seconds / latency`).

use clap::Parser;
use ponder_cli::embedded::{EmbeddedCluster, EmbeddedConfig};
use ponder_engine::{ModelWorker, WorkerConfig};
use ponder_search::{solve, Budget, SolutionFormat, SolveParams};
use ponder_worker::local::{LocalGenerator, LocalVerifier};
use rand::SeedableRng;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Models directory (manifest.json names the default generator and verifier).
    #[arg(long)]
    models: Option<PathBuf>,
    /// Budgets (generations) to measure.
    #[arg(long, value_delimiter = ',', default_value = "4,16")]
    budgets: Vec<u32>,
    /// Questions per level (levels 1..=6).
    #[arg(long, default_value_t = 3)]
    per_level: usize,
    /// Solve only the question at this index of the set (for instruction counts under
    /// callgrind: one fixed query).
    #[arg(long)]
    only_question: Option<usize>,
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v.iter().sum::<f64>() / v.len() as f64, v[v.len() / 2])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ponder_engine::engine::init_cpu_threads();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let bundled = ponder_cli::models::bundled(args.models.as_deref(), None)?;
        let gen_path = bundled.generator.clone();
        let prm_path = bundled
            .verifier
            .clone()
            .ok_or_else(|| anyhow::anyhow!("cluster-bench needs a verifier model"))?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
        let questions: Vec<String> = (1..=6u8)
            .flat_map(|l| (0..args.per_level).map(move |_| l))
            .map(|l| ponder_arith::task::generate(l, &mut rng).question)
            .enumerate()
            .filter(|(i, _)| args.only_question.is_none_or(|only| only == *i))
            .map(|(_, q)| q)
            .collect();
        let cluster = EmbeddedCluster::start(EmbeddedConfig {
            orchestrator_addr: "127.0.0.1:0".parse()?,
            generator_model: gen_path.clone(),
            other_generator_models: vec![],
            verifier_model: Some(prm_path.clone()),
            policy: None,
            generators: 1,
            etcd: vec![],
            cluster: "bench".into(),
            metrics_addr: None,
            gateway_addr: None,
            control: Default::default(),
            record_calls: None,
            kv_cache_dtype: Default::default(),
            quantize: Default::default(),
        })
        .await?;
        let mut client = ponder_cli::client::connect(&cluster.addr().to_string()).await?;
        let open = |p: &PathBuf| -> anyhow::Result<ModelWorker> {
            // As the cluster's nodes load it: the KV cache its manifest entry asks for.
            let m = ponder_engine::load(p, &ponder_worker::manifest::serving_options(p))?;
            m.warm_up()?;
            Ok(ModelWorker::spawn(m, WorkerConfig::default()))
        };
        let local_gen = LocalGenerator::new(open(&gen_path)?);
        let local_ver = LocalVerifier::new(open(&prm_path)?)?;
        let format = SolutionFormat::default();
        println!(
            "{} questions ({} per level), the default strategy (compute-optimal, built-in policy), 1 generator + 1 verifier",
            questions.len(),
            args.per_level
        );
        println!(
            "{:>7} {:>13} {:>13} {:>13} {:>13} {:>9} {:>10}",
            "budget",
            "cluster mean",
            "cluster p50",
            "in-proc mean",
            "in-proc p50",
            "ratio",
            "overhead"
        );
        for &budget in &args.budgets {
            let (mut cl, mut lo, mut over) = (vec![], vec![], vec![]);
            for (i, q) in questions.iter().enumerate() {
                // A fixed budget, as the in-process side spends (docs/load-adaptive.md).
                let mut req = ponder_cli::client::request(q, None, budget, 0, i as u64);
                req.budget_mode = ponder_proto::v1::BudgetMode::Fixed as i32;
                let t = Instant::now();
                let r = client.solve(req).await?.into_inner();
                let latency = t.elapsed().as_secs_f64();
                cl.push(latency);
                over.push(1.0 - r.calls_seconds / latency);
                let t = Instant::now();
                let o = solve(
                    &local_gen,
                    Some(&local_ver),
                    &format,
                    SolveParams::new(q.clone(), Budget::new(budget, 0, None)?, i as u64),
                    None,
                )
                .await?;
                lo.push(t.elapsed().as_secs_f64());
                // The same seeds give the same answer either way.
                assert_eq!(o.answer.unwrap_or_default(), r.answer, "{q}");
            }
            let (cm, cp) = stats(cl);
            let (lm, lp) = stats(lo);
            let (om, _) = stats(over);
            println!(
                "{budget:>7} {:>11.3} s {:>11.3} s {:>11.3} s {:>11.3} s {:>8.2}x {:>9.1}%",
                cm,
                cp,
                lm,
                lp,
                cm / lm,
                100.0 * om
            );
        }
        cluster.stop().await;
        Ok(())
    })
}
