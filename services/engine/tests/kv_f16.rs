//! The f16 KV cache (`LoadOptions::kv_cache`): the same model, its keys and values
//! stored in half precision, stays within rounding of the f32 cache, decoding token by
//! token and on the GEMM path, and a worker serves with it and says so.

use ponder_engine::fixtures::{max_abs_diff, write_tiny_model, TinySpec};
use ponder_engine::model::Segment;
use ponder_engine::{
    load, GenerateRequest, KvDtype, LoadOptions, LoadedModel, ModelWorker, SamplingParams,
    WorkerConfig,
};

fn tiny(dir: &std::path::Path, hidden: usize, heads: usize, kv_cache: KvDtype) -> LoadedModel {
    let spec = TinySpec {
        hidden,
        heads,
        kv_heads: heads / 2,
        ..TinySpec::llama()
    };
    write_tiny_model(dir, &spec).unwrap();
    load(
        dir,
        &LoadOptions {
            kv_cache,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

/// Logits after each token of `ids`: the first `prefill` tokens in one pass, then one
/// token per pass, each reading everything cached before it.
fn stepwise_logits(m: &LoadedModel, ids: &[u32], prefill: usize) -> Vec<Vec<f32>> {
    let mut cache = m.model.new_cache();
    let mut rows = Vec::new();
    let mut at = 0;
    for end in std::iter::once(prefill).chain(prefill + 1..=ids.len()) {
        let h = m
            .model
            .forward(&mut [Segment {
                tokens: &ids[at..end],
                cache: &mut cache,
            }])
            .unwrap();
        rows.extend(m.model.logits(&h).unwrap().to_vec2::<f32>().unwrap());
        at = end;
    }
    assert_eq!(cache.dtype(), m.model.kv_dtype);
    rows
}

#[test]
fn f16_keys_and_values_stay_within_rounding_of_f32_on_both_attention_paths() {
    let ids: Vec<u32> = (0..70).map(|i| (i * 37 % 99) as u32 + 1).collect();
    // Heads 16 wide take the direct loops; 32 rows of 64-wide heads the GEMM path.
    for (hidden, heads, prefill) in [(64, 4, 5), (256, 4, 32)] {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let exact = tiny(a.path(), hidden, heads, KvDtype::F32);
        let half = tiny(b.path(), hidden, heads, KvDtype::F16);
        assert_eq!(
            (exact.info.kv_cache.as_str(), half.info.kv_cache.as_str()),
            ("f32", "f16")
        );
        let want = stepwise_logits(&exact, &ids, prefill);
        let got = stepwise_logits(&half, &ids, prefill);
        assert_eq!(got.len(), ids.len());
        let scale = want.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
        let dev = max_abs_diff(&want, &got);
        eprintln!("hidden {hidden}: max |dlogit| {dev:.2e}, logits up to {scale:.2}");
        // Half precision keeps 11 bits: a relative error of about 5e-4 per key and value.
        assert!(
            dev > 0.0 && dev < 1e-2 * scale.max(1.0),
            "hidden {hidden}: max |dlogit| {dev} (logits up to {scale})"
        );
    }
}

#[test]
fn a_worker_samples_with_an_f16_cache() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = tiny(dir.path(), 64, 4, KvDtype::F16);
    loaded.warm_up().unwrap();
    let worker = ModelWorker::spawn(loaded, WorkerConfig::default());
    assert_eq!(worker.info().kv_cache, "f16");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt
        .block_on(worker.generate(GenerateRequest {
            prompt: "hello".into(),
            n: 8,
            params: SamplingParams {
                max_tokens: 40,
                temperature: 0.8,
                seed: 3,
                ignore_eos: true,
                ..Default::default()
            },
        }))
        .unwrap();
    assert_eq!(out.completions.len(), 8);
    assert!(out.completions.iter().all(|c| c.token_ids.len() == 40));
}
