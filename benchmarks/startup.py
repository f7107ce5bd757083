"""`lucid serve` start-up and memory alone (no peer, ~1-2 min): where the seconds to a healthy server go, and the
resident memory of one user's chat with the default settings.

1. Phases, in a fresh interpreter each (warm caches: the packed weights, the compiled kernels, the page cache),
   wall and CPU seconds: import torch, import the server stack, load the kernels, read the checkpoint (config +
   tokenizer), map the packed weights, build the engine (KV pool, fused decoder), and the first and second
   request's step. CPU seconds say what a quiet machine would see when other jobs stretch the wall clock.
2. `--starts` launches of `lucid serve` (defaults, as a user starts it): seconds from launch to a healthy /health,
   idle RSS, then one chat (a 128-token prompt, `--output` tokens) and the peak RSS (VmHWM) after it.

    .venv/bin/python benchmarks/startup.py                 # both parts
    .venv/bin/python benchmarks/startup.py --starts 5 --skip-phases
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PHASES_CHILD = "--phases-child"


def _phases() -> None:
    """Runs in a fresh interpreter: time each start-up phase; prints one JSON line."""
    rows: list[tuple[str, float, float]] = []
    wall, cpu = time.perf_counter(), time.process_time()

    def mark(name: str) -> None:
        nonlocal wall, cpu
        rows.append((name, time.perf_counter() - wall, time.process_time() - cpu))
        wall, cpu = time.perf_counter(), time.process_time()

    import torch
    mark("import torch")
    import lucid.server.cli_serve  # noqa: F401  (fastapi, uvicorn, pydantic, the app)
    mark("import the server (fastapi, uvicorn, lucid.server)")
    from lucid import kernels
    kernels.available()
    mark("load lucid's kernels")
    from lucid.config import DEFAULT_QUANTIZATION, EngineConfig
    from lucid.engine.llm_engine import LLMEngine
    from lucid.loader.load import load_quantized
    from lucid.loader.packed_cache import load_packed, packed_entry
    from lucid.loader.read import read_checkpoint
    from lucid.quantize import packed_model
    from lucid.sampling_params import SamplingParams
    from lucid.server.cli_serve import CPU_MAX_MODEL_LEN
    from lucid.threads import configure_threads

    configure_threads()
    checkpoint = read_checkpoint(None)
    mark("read the checkpoint (config, tokenizer)")
    # What load_quantized does after reading the checkpoint, when the packed entry exists (warm caches).
    entry = packed_entry(checkpoint.path, torch.bfloat16, DEFAULT_QUANTIZATION)
    if load_packed(entry) is None:        # cold cache: write the entry first (not a warm start; not timed)
        load_quantized(None, DEFAULT_QUANTIZATION)
        wall, cpu = time.perf_counter(), time.process_time()
    tensors = load_packed(entry)
    model = packed_model(checkpoint.config, tensors, DEFAULT_QUANTIZATION, torch.bfloat16)
    mark("map the packed weights, build the model")
    engine = LLMEngine(model, checkpoint.tokenizer, checkpoint.config, EngineConfig(max_model_len=CPU_MAX_MODEL_LEN),
                       checkpoint.generation_config, checkpoint.name)
    mark("build the engine (KV pool, fused decoder)")
    prompt = checkpoint.tokenizer.encode("def fibonacci(n):")
    for name in ("first request, 8 tokens", "second request, 8 tokens"):
        engine.add_request(name, prompt, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))
        while engine.has_unfinished():
            engine.step()
        mark(name)
    print(json.dumps(rows))


def resident_bytes(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def phases(env: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, __file__, PHASES_CHILD], env=env, capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    print("| phase (fresh interpreter, warm caches) | wall s | CPU s |")
    print("|---|---|---|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")
    start = [r for r in rows if not r[0].endswith("8 tokens")]
    print(f"| **to a loaded engine** | **{sum(r[1] for r in start):.2f}** | **{sum(r[2] for r in start):.2f}** |\n")


def starts(count: int, output: int, env: dict[str, str]) -> None:
    from lucid.bench.server import lucid_server
    from lucid.bench.sweep import concurrency_sweep

    results = []
    for i in range(count + 1):           # the first start warms the caches and is not counted
        server = lucid_server(None, [], env=env)
        with server:
            idle = resident_bytes(server.proc.pid)
            summary = concurrency_sweep(server.url, [1], rounds=1, input_len=128, output_len=output,
                                        progress=False)[1]
            peak = resident_bytes(server.proc.pid, "VmHWM")
        if i:
            results.append((server.startup_s, idle, peak, summary.output_throughput))
            print(f"start {i}: healthy after {server.startup_s:.2f} s, idle RSS {idle / 1e9:.3f} GB, peak RSS after "
                  f"one chat {peak / 1e9:.3f} GB, {summary.output_throughput:.1f} tok/s", flush=True)
    print(f"median of {count}: start-up {statistics.median(r[0] for r in results):.2f} s, idle RSS "
          f"{statistics.median(r[1] for r in results) / 1e9:.3f} GB, peak RSS (one user, defaults) "
          f"{statistics.median(r[2] for r in results) / 1e9:.3f} GB")


def main() -> None:
    if sys.argv[1:] == [PHASES_CHILD]:
        return _phases()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=3, help="counted starts of `lucid serve` (after one warm-up)")
    parser.add_argument("--output", type=int, default=64, help="tokens of the one chat after each start")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--skip-phases", action="store_true")
    parser.add_argument("--skip-starts", action="store_true")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if not args.skip_phases:
        phases(env)
    if not args.skip_starts:
        starts(args.starts, args.output, env)
    print(f"\nCommand: `{' '.join([os.path.relpath(sys.executable), *sys.argv])}`")


if __name__ == "__main__":
    main()
