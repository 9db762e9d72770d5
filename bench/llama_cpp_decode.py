"""llama.cpp's single-stream greedy decode speed on a GGUF file, as one JSON line.

Called by `engine-bench` so both figures come from the same run on the same machine.
"""

import argparse
import json
import time

import llama_cpp
import numpy as np

from llama_cpp_compat import use_safe_model_params


def last_argmax(llm):
    # Without logits_all, Llama.scores stays zero; read the last row directly.
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    use_safe_model_params()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=1024, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False)
    ids = llm.tokenize(args.prompt.encode(), add_bos=False, special=True)
    best = None
    for _ in range(3):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        tok = last_argmax(llm)
        for _ in range(args.tokens):
            llm.eval([tok])
            tok = last_argmax(llm)
        t2 = time.perf_counter()
        run = {"prefill_tok_s": len(ids) / (t1 - t0), "decode_tok_s": args.tokens / (t2 - t1)}
        if best is None or run["decode_tok_s"] > best["decode_tok_s"]:
            best = run
    print(json.dumps(best))


if __name__ == "__main__":
    main()
