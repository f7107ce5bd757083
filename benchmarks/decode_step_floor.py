"""The fastest single-stream decode step of lucid (a weight format) or llama.cpp, out of many: a load-robust figure.

    .venv/bin/python benchmarks/decode_step_floor.py lucid mixed
    .venv/bin/python benchmarks/decode_step_floor.py llama

On a shared machine a whole-run tok/s mostly measures the other jobs. A decode step reads every weight once; its
time when nothing else ran is the floor of many step times, so the 5th-percentile step (and the minimum) over
`--steps` steps is what this prints, as tokens/s (1 / step time) and as GB/s of weights read. Run the systems in
turns (a shell loop) and compare their floors; a quiet machine gives the same ratios as benchmarks/compare.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def lucid_steps(scheme: str, steps: int) -> tuple[list[float], int]:
    from lucid import LLM, SamplingParams
    from lucid.bench.bandwidth import weight_bytes_per_token

    llm = LLM(None, dtype="bfloat16", quantization=scheme)
    engine = llm.engine
    engine.add_request("floor", list(range(1000, 1016)), SamplingParams(temperature=0, max_tokens=steps + 1,
                                                                       ignore_eos=True))
    engine.step()                                   # the prompt
    times = []
    while engine.has_unfinished():
        started = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - started)
    return times, weight_bytes_per_token(engine.model)


def llama_steps(steps: int, threads: int) -> tuple[list[float], int]:
    from llama_cpp import Llama

    from lucid.bench.bandwidth import gguf_bytes_per_token
    from lucid.loader import default_model_path

    path = str(default_model_path(progress=False))
    llm = Llama(path, n_threads=threads, n_threads_batch=threads, n_ctx=1024, verbose=False)
    llm.eval(list(range(1000, 1016)))
    times = []
    token = 1016
    for _ in range(steps):
        started = time.perf_counter()
        llm.eval([token])
        times.append(time.perf_counter() - started)
        token = int(llm.scores[llm.n_tokens - 1].argmax())  # greedy, as lucid's steps (the draw is in the step there)
    return times, gguf_bytes_per_token(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=["lucid", "llama"])
    parser.add_argument("scheme", nargs="?", default="mixed", help="lucid's -q (mixed)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    times, nbytes = lucid_steps(args.scheme, args.steps) if args.system == "lucid" else llama_steps(args.steps,
                                                                                                   args.threads)
    times.sort()
    p5, low, median = times[len(times) // 20], times[0], statistics.median(times)
    name = f"lucid ({args.scheme})" if args.system == "lucid" else "llama.cpp"
    print(f"{name}: {nbytes / 1e6:.1f} MB/token; step floor (p5) {1 / p5:.1f} tok/s = {nbytes / p5 / 1e9:.1f} GB/s; "
          f"fastest {1 / low:.1f} tok/s; median {1 / median:.1f} tok/s; {len(times)} steps, {args.threads} threads")


if __name__ == "__main__":
    main()
