"""llama.cpp batched decoding on a bundled ponder-arith model: the baseline for
`bundled-bench` (bench/src/bundled/llama.rs calls this; it is not run on its own).

1. Converts the model's HF safetensors to GGUF with the `gguf` package, as f32 and as
   Q8_0 (norms stay f32), into a temporary directory. Q/K rows are permuted from the HF
   rotate-half layout to GGML's, as llama.cpp's own converter does.
2. For each n: the prompt is decoded once, then every step decodes one token per
   sequence in one `llama_batch` (T = 0.8, EOS ignored, `--tokens` per sequence), through
   llama-cpp-python's low-level API with 2 threads. Swept, best reported with its setting:
   n_batch/n_ubatch, and the KV layout: unified (the prompt decoded once for all n
   sequence ids, its cells shared, but every token attends over the whole cache with a
   mask) or one stream per sequence (the prompt's cells copied with `llama_memory_seq_cp`).
3. Greedy tokens of the first 32 steps (n = 1, f32) are printed too, so the caller can
   check the conversion agrees with our engine.

Prints one JSON object on stdout.
"""

import argparse
import ctypes
import json
import os
import sys
import tempfile
import time

import numpy as np
import gguf
import llama_cpp as L
from safetensors.numpy import load_file

from llama_cpp_compat import model_params


def permute(w, heads):
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert(model_dir, out_path, qtype):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    t = load_file(os.path.join(model_dir, "model.safetensors"))
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hidden = cfg["hidden_size"]
    w = gguf.GGUFWriter(out_path, "llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if qtype is None else gguf.LlamaFileType.MOSTLY_Q8_0)
    # Token ids go in directly: a vocabulary-less model (llama.cpp's "no_vocab").
    w.add_tokenizer_model("no_vocab")
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    if "lm_head.weight" not in t:
        t["lm_head.weight"] = t["model.embed_tokens.weight"]
    for hf, gg in names.items():
        x = t[hf].astype(np.float32)
        if hf.endswith("q_proj.weight"):
            x = permute(x, heads)
        elif hf.endswith("k_proj.weight"):
            x = permute(x, kv_heads)
        if qtype is not None and x.ndim == 2:
            w.add_tensor(gg, gguf.quants.quantize(x, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gg, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return cfg


class Runner:
    def __init__(self, path, n_seq, n_ctx, n_batch, n_ubatch, threads, unified):
        mp = model_params()
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_ubatch
        cp.n_seq_max = n_seq
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.kv_unified = unified
        self.unified = unified
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise SystemExit("llama.cpp could not create a context")
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model)) or 0
        self.batch = L.llama_batch_init(max(n_batch, n_seq), 0, n_seq)
        self.n_batch = n_batch

    def clear(self):
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)

    def decode(self, entries):
        """entries: (token, pos, seq_ids, want_logits); chunked by n_batch."""
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start:start + self.n_batch]
            b = self.batch
            for i, (tok, pos, seqs, logits) in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = pos
                b.n_seq_id[i] = len(seqs)
                for j, s in enumerate(seqs):
                    b.seq_id[i][j] = s
                b.logits[i] = logits
            b.n_tokens = len(chunk)
            rc = L.llama_decode(self.ctx, b)
            if rc != 0:
                raise SystemExit(f"llama_decode returned {rc}")

    def logits(self, rows, vocab):
        ptr = L.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(ptr, shape=(rows, vocab)).copy()

    def close(self):
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)


def run(runner, prompt, n, tokens, vocab, temperature, rng):
    """Seconds to prefill `prompt` once for n sequences and decode `tokens` per sequence."""
    runner.clear()
    t = time.perf_counter()
    last = len(prompt) - 1
    if runner.unified:
        runner.decode([(tok, p, list(range(n)), p == last) for p, tok in enumerate(prompt)])
    else:
        runner.decode([(tok, p, [0], p == last) for p, tok in enumerate(prompt)])
        mem = L.llama_get_memory(runner.ctx)
        for s in range(1, n):
            L.llama_memory_seq_cp(mem, 0, s, -1, -1)
    logits = np.repeat(runner.logits(1, vocab), n, axis=0)
    out = []
    for step in range(tokens):
        if temperature == 0:
            nxt = logits.argmax(axis=1)
        else:
            g = rng.gumbel(size=logits.shape).astype(np.float32)
            nxt = (logits / temperature + g).argmax(axis=1)
        out.append(int(nxt[0]))
        pos = len(prompt) + step
        runner.decode([(int(nxt[s]), pos, [s], True) for s in range(n)])
        logits = runner.logits(n, vocab)
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="HF model directory (config.json, model.safetensors)")
    ap.add_argument("--prompt-ids", required=True, help="comma-separated token ids of the prompt")
    ap.add_argument("--samples", default="1,8,16,64")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    L.llama_backend_init()
    # Silence llama.cpp's logging; the callback must outlive every call that may log.
    global _quiet
    _quiet = L.llama_log_callback(lambda level, text, data: None)
    L.llama_log_set(_quiet, ctypes.c_void_p())
    prompt = [int(x) for x in args.prompt_ids.split(",")]
    samples = [int(x) for x in args.samples.split(",")]
    result = {"threads": args.threads, "tokens": args.tokens, "precisions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, qtype in (("f32", None), ("q8_0", gguf.GGMLQuantizationType.Q8_0)):
            path = os.path.join(tmp, f"model-{name}.gguf")
            cfg = convert(args.model, path, qtype)
            vocab = cfg["vocab_size"]
            per_n = {}
            for n in samples:
                best = None
                settings = [(nb, nub, u) for u in (True, False)
                            for nb, nub in ((64, 64), (256, 256), (512, 512), (512, 128))]
                for nb, nub, unified in settings:
                    # Split streams get n_ctx / n each: room for the prompt and the tokens.
                    per_seq = len(prompt) + args.tokens + 64
                    n_ctx = per_seq * n if not unified else len(prompt) + n * args.tokens + 64
                    runner = Runner(path, n, n_ctx, nb, nub, args.threads, unified)
                    rng = np.random.default_rng(1)
                    run(runner, prompt, n, 4, vocab, 0.8, rng)  # warm-up
                    times = sorted(run(runner, prompt, n, args.tokens, vocab, 0.8 if n > 1 else 0.0, rng)[0]
                                   for _ in range(args.runs))
                    med = times[len(times) // 2]
                    rate = n * args.tokens / med
                    if best is None or rate > best["tok_s"]:
                        best = {"tok_s": rate, "n_batch": nb, "n_ubatch": nub, "kv_unified": unified}
                    if name == "f32" and n == 1 and "greedy" not in result:
                        result["greedy"] = run(runner, prompt, 1, 32, vocab, 0.0, rng)[1]
                    runner.close()
                per_n[str(n)] = best
            result["precisions"][name] = per_n
    result["llama_cpp_python"] = L.__version__
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
