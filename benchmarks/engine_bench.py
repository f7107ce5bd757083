"""Load time, peak RSS, prefill and decode speed of lucid vs HF transformers on the default model.

Each configuration runs in its own process (so peak RSS is its own), one after another, with the same
prompt and the same number of threads. Prefill: a 512-token prompt, time to the first token. Decode:
greedy tokens per second over `--decode` tokens after a short prompt (EOS suppressed). Median of --runs.

    .venv/bin/python benchmarks/engine_bench.py        # lucid bf16/fp32/quantized, transformers bf16/fp32
    .venv/bin/python benchmarks/engine_bench.py --only lucid:bfloat16:none
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = ["lucid:bfloat16:none", "lucid:float32:none", "lucid:bfloat16:int8", "lucid:bfloat16:int4",
           "lucid:bfloat16:mixed", "transformers:bfloat16:none", "transformers:float32:none"]


def prompt_ids(tokenizer_encode, n: int, salt: int) -> list[int]:
    """A natural-looking prompt of exactly n tokens; `salt` changes it so no prefix cache can help."""
    text = f"Run {salt}. " + " ".join(f"The number {i} follows {i - 1} in the list of integers." for i in range(400))
    return tokenizer_encode(text)[:n]


def bench_lucid(dtype: str, quantization: str, runs: int, decode: int) -> dict:
    from lucid import SamplingParams
    from lucid.llm import LLM

    started = time.perf_counter()
    llm = LLM(None, dtype=dtype, quantization=quantization)
    load_s = time.perf_counter() - started
    encode = llm.tokenizer.encode
    prefill, decode_rates = [], []
    for run in range(runs):
        ids = prompt_ids(encode, 512, run)
        t = time.perf_counter()
        llm.generate([ids], SamplingParams(temperature=0, max_tokens=1))
        prefill.append(512 / (time.perf_counter() - t))
        short = prompt_ids(encode, 16, 100 + run)
        # Decode rate: the whole generation minus the time of a 1-token generation (the prefill).
        t = time.perf_counter()
        llm.generate([short], SamplingParams(temperature=0, max_tokens=decode, ignore_eos=True))
        total = time.perf_counter() - t
        short = prompt_ids(encode, 16, 200 + run)
        t = time.perf_counter()
        llm.generate([short], SamplingParams(temperature=0, max_tokens=1))
        first = time.perf_counter() - t
        decode_rates.append((decode - 1) / max(total - first, 1e-9))
    return {"load_s": load_s, "prefill_tok_s": statistics.median(prefill),
            "decode_tok_s": statistics.median(decode_rates)}


def bench_transformers(dtype: str, runs: int, decode: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from lucid.loader import default_model_path

    path = default_model_path(progress=False)
    started = time.perf_counter()
    kwargs = dict(gguf_file=path.name, dtype=getattr(torch, dtype),
                  quantization_config=GgufConfig(gguf_file=path.name, dequantize=True))
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), **kwargs).eval()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    load_s = time.perf_counter() - started
    prefill, decode_rates = [], []
    with torch.inference_mode():
        for run in range(runs):
            ids = torch.tensor([prompt_ids(tok.encode, 512, run)])
            t = time.perf_counter()
            model(ids)
            prefill.append(512 / (time.perf_counter() - t))
            short = torch.tensor([prompt_ids(tok.encode, 16, 100 + run)])
            t = time.perf_counter()
            model.generate(short, max_new_tokens=1, do_sample=False)
            first = time.perf_counter() - t
            t = time.perf_counter()
            model.generate(short, max_new_tokens=decode, min_new_tokens=decode, do_sample=False)
            decode_rates.append((decode - 1) / max(time.perf_counter() - t - first, 1e-9))
    return {"load_s": load_s, "prefill_tok_s": statistics.median(prefill),
            "decode_tok_s": statistics.median(decode_rates)}


def child(config: str, runs: int, decode: int) -> None:
    system, dtype, quantization = config.split(":")
    if system == "lucid":
        result = bench_lucid(dtype, quantization, runs, decode)
    else:
        result = bench_transformers(dtype, runs, decode)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=CONFIGS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.runs, args.decode)
        return
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.runs} runs; "
          f"decode {args.decode} tokens\n")
    print("| system | dtype | weights | load s | prefill tok/s (512) | decode tok/s | peak RSS GB |")
    print("|---|---|---|---|---|---|---|")
    for config in args.only:
        proc = subprocess.run([sys.executable, __file__, "--child", config, "--runs", str(args.runs),
                               "--decode", str(args.decode)], capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        system, dtype, quantization = config.split(":")
        if line is None:
            print(f"| {system} | {dtype} | {quantization} | failed: {proc.stderr.strip().splitlines()[-1:]} |")
            continue
        r = json.loads(line[7:])
        print(f"| {system} | {dtype} | {quantization} | {r['load_s']:.1f} | {r['prefill_tok_s']:.0f} | "
              f"{r['decode_tok_s']:.1f} | {r['peak_rss_gb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
