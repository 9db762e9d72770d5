//! The GGUF path for both architectures: a tiny Hugging Face checkpoint is
//! converted to GGUF the way llama.cpp's converter does it (Llama q/k rows
//! permuted for interleaved rotary, Qwen2 left as is) and must give the same
//! logits as the original.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ponder_engine::config::Arch;
use ponder_engine::fixtures::{max_abs_diff, write_tiny_model, TinySpec};
use ponder_engine::kv::KvCache;
use ponder_engine::model::Segment;
use ponder_engine::{load, LoadOptions, LoadedModel};
use std::path::Path;

/// llama.cpp's `permute` for Llama q/k weights: within each head, rows
/// (first half, second half) become interleaved pairs.
fn permute_for_interleaved_rope(w: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = w.dims2().unwrap();
    w.reshape((heads, 2, out / heads / 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((out, inp))
        .unwrap()
}

/// Writes `tiny.gguf` with weight matrices stored as `matrix_type`. With
/// `dequantized_from`, matrices are first rounded through that type and stored
/// as f32: the same numbers a quantized file holds, computed without our kernels.
fn convert_to_gguf(
    hf_dir: &Path,
    spec: &TinySpec,
    out_dir: &Path,
    matrix_type: GgmlDType,
    dequantized_from: Option<GgmlDType>,
) {
    std::fs::create_dir_all(out_dir).unwrap();
    let st =
        candle_core::safetensors::load(hf_dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let arch = spec.arch.name();
    let hd = spec.hidden / spec.heads;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    // Matrices are stored as `matrix_type` (after rounding through `dequantized_from`);
    // embeddings, norms and biases always as f32.
    let mut put = |name: String, t: &Tensor, is_matrix: bool| {
        let (t, dtype) = match (is_matrix, dequantized_from) {
            (true, Some(q)) => (
                QTensor::quantize(t, q)
                    .unwrap()
                    .dequantize(&Device::Cpu)
                    .unwrap(),
                matrix_type,
            ),
            (true, None) => (t.clone(), matrix_type),
            (false, _) => (t.clone(), GgmlDType::F32),
        };
        tensors.push((name, QTensor::quantize(&t, dtype).unwrap()))
    };
    put(
        "token_embd.weight".into(),
        &st["model.embed_tokens.weight"],
        false,
    );
    put("output_norm.weight".into(), &st["model.norm.weight"], false);
    if let Some(head) = st.get("lm_head.weight") {
        put("output.weight".into(), head, true);
    }
    for i in 0..spec.layers {
        let hf = |n: &str| &st[&format!("model.layers.{i}.{n}")];
        let (mut q, mut k) = (
            hf("self_attn.q_proj.weight").clone(),
            hf("self_attn.k_proj.weight").clone(),
        );
        if spec.arch == Arch::Llama {
            q = permute_for_interleaved_rope(&q, spec.heads);
            k = permute_for_interleaved_rope(&k, spec.kv_heads);
        }
        let b = format!("blk.{i}");
        put(format!("{b}.attn_q.weight"), &q, true);
        put(format!("{b}.attn_k.weight"), &k, true);
        put(
            format!("{b}.attn_v.weight"),
            hf("self_attn.v_proj.weight"),
            true,
        );
        put(
            format!("{b}.attn_output.weight"),
            hf("self_attn.o_proj.weight"),
            true,
        );
        put(
            format!("{b}.ffn_gate.weight"),
            hf("mlp.gate_proj.weight"),
            true,
        );
        put(format!("{b}.ffn_up.weight"), hf("mlp.up_proj.weight"), true);
        put(
            format!("{b}.ffn_down.weight"),
            hf("mlp.down_proj.weight"),
            true,
        );
        put(
            format!("{b}.attn_norm.weight"),
            hf("input_layernorm.weight"),
            false,
        );
        put(
            format!("{b}.ffn_norm.weight"),
            hf("post_attention_layernorm.weight"),
            false,
        );
        if spec.arch == Arch::Qwen2 {
            for (p, n) in [("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj")] {
                put(
                    format!("{b}.attn_{p}.bias"),
                    hf(&format!("self_attn.{n}.bias")),
                    false,
                );
            }
        }
    }
    let md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (
            format!("{arch}.block_count"),
            Value::U32(spec.layers as u32),
        ),
        (
            format!("{arch}.embedding_length"),
            Value::U32(spec.hidden as u32),
        ),
        (
            format!("{arch}.feed_forward_length"),
            Value::U32(spec.intermediate as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            Value::U32(spec.heads as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            Value::U32(spec.kv_heads as u32),
        ),
        (
            format!("{arch}.rope.dimension_count"),
            Value::U32(hd as u32),
        ),
        (format!("{arch}.rope.freq_base"), Value::F32(10_000.0)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        ),
        (format!("{arch}.context_length"), Value::U32(1024)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(out_dir.join("tiny.gguf")).unwrap();
    gguf_file::write(&mut file, &md_refs, &t_refs).unwrap();
    // The character tokenizer is not byte-level BPE, so it travels as tokenizer.json.
    std::fs::copy(
        hf_dir.join("tokenizer.json"),
        out_dir.join("tokenizer.json"),
    )
    .unwrap();
}

fn logits(m: &LoadedModel, text: &str) -> Vec<Vec<f32>> {
    let ids = m.codec.encode(text, true).unwrap();
    let mut cache = KvCache::new(m.model.config.num_layers);
    let h = m
        .model
        .forward(&mut [Segment {
            tokens: &ids,
            cache: &mut cache,
        }])
        .unwrap();
    m.model.logits(&h).unwrap().to_vec2::<f32>().unwrap()
}

#[test]
fn gguf_conversions_of_llama_and_qwen2_match_the_safetensors_model() {
    let text = "Q: (47+38)*3-19\nstep";
    for spec in [TinySpec::llama(), TinySpec::qwen2()] {
        let hf_dir = tempfile::tempdir().unwrap();
        write_tiny_model(hf_dir.path(), &spec).unwrap();
        let reference = logits(&load(hf_dir.path(), &LoadOptions::default()).unwrap(), text);
        // Unquantized: only the layout differs, so the logits must agree to float precision.
        let f32_dir = tempfile::tempdir().unwrap();
        convert_to_gguf(hf_dir.path(), &spec, f32_dir.path(), GgmlDType::F32, None);
        let gguf = load(&f32_dir.path().join("tiny.gguf"), &LoadOptions::default()).unwrap();
        assert_eq!(gguf.info.architecture, spec.arch.name());
        let d = max_abs_diff(&reference, &logits(&gguf, text));
        assert!(d < 1e-3, "{:?}: f32 GGUF logits differ by {d}", spec.arch);
        // Q4_1 and Q8_0 matrices through our kernels against the same rounded weights
        // in f32: the only difference left is the 8-bit rounding of activations.
        let scale = reference.iter().flatten().fold(0f32, |a, x| a.max(x.abs()));
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let (q_dir, deq_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            convert_to_gguf(hf_dir.path(), &spec, q_dir.path(), dtype, None);
            convert_to_gguf(
                hf_dir.path(),
                &spec,
                deq_dir.path(),
                GgmlDType::F32,
                Some(dtype),
            );
            let q = load(&q_dir.path().join("tiny.gguf"), &LoadOptions::default()).unwrap();
            assert!(
                q.info.format.contains(&format!("{dtype:?}")),
                "{}",
                q.info.format
            );
            let deq = load(&deq_dir.path().join("tiny.gguf"), &LoadOptions::default()).unwrap();
            let d = max_abs_diff(&logits(&deq, text), &logits(&q, text)) / scale;
            // Measured about 0.025 for both types and architectures.
            assert!(
                d < 0.05,
                "{:?} {dtype:?}: logits differ by {d} of their range",
                spec.arch
            );
        }
    }
}

#[test]
fn unsupported_gguf_tokenizers_are_refused_by_name() {
    let err = ponder_engine::gguf_tokenizer::pre_tokenizer("deepseek-coder")
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("deepseek-coder") && err.to_string().contains("tokenizer.json"),
        "{err}"
    );
}
