"""`lucid serve` start-up and memory alone (no peer, ~1-2 min): where the seconds to a healthy server go, and the
resident memory of one user's chat with the default settings.

1. Phases, in a fresh interpreter each (warm caches: the packed weights, the compiled kernels, the page cache),
   wall and CPU seconds, with the garbage collector paused as `lucid serve` pauses it (lucid.server.startup_gc):
   import torch, import the server stack, load the kernels, read the checkpoint (config + tokenizer), map the packed
   weights, build the engine (KV pool, fused decoder), the collection LLMEngine.from_pretrained ends with, and the
   first and second request's step. CPU seconds say what a quiet machine would see when other jobs stretch the
   wall clock. `--gc-compare` runs the phases a second time with the collector left on, side by side.
2. The floor: `import torch` alone in a fresh interpreter (median of 3), wall and CPU seconds.
3. `--starts` launches of `lucid serve` (defaults, as a user starts it): seconds from launch to a healthy /health
   and the CPU seconds the server had used by then, idle RSS, then one chat (a 128-token prompt, `--output`
   tokens) and the peak RSS (VmHWM) after it.

    .venv/bin/python benchmarks/startup.py                 # all parts
    .venv/bin/python benchmarks/startup.py --gc-compare --skip-starts
    .venv/bin/python benchmarks/startup.py --starts 5 --skip-phases
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lucid.bench.server import process_tree, tree_memory_bytes

PHASES_CHILD = "--phases-child"
GC_ON_ENV = "LUCID_STARTUP_BENCH_GC_ON"   # set: the phases child leaves the garbage collector on (the old start-up)


def _phases() -> None:
    """Runs in a fresh interpreter: time each start-up phase; prints one JSON line."""
    rows: list[tuple[str, float, float]] = []
    wall, cpu = time.perf_counter(), time.process_time()

    def mark(name: str) -> None:
        nonlocal wall, cpu
        rows.append((name, time.perf_counter() - wall, time.process_time() - cpu))
        wall, cpu = time.perf_counter(), time.process_time()

    from lucid.server import startup_gc

    gc_on = bool(os.environ.get(GC_ON_ENV))
    if not gc_on:
        startup_gc.pause()        # as run_serve does, before its heavy imports
    import torch
    mark("import torch")
    import uvicorn  # noqa: F401

    import lucid.server.app  # noqa: F401  (fastapi, pydantic, the routes)
    import lucid.server.cli_serve  # noqa: F401
    if not gc_on:
        startup_gc.freeze_imports()
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
    model = packed_model(checkpoint.config, tensors, DEFAULT_QUANTIZATION, torch.bfloat16,
                         stored_formats=checkpoint.stored_formats)
    mark("map the packed weights, build the model")
    engine = LLMEngine(model, checkpoint.tokenizer, checkpoint.config, EngineConfig(max_model_len=CPU_MAX_MODEL_LEN),
                       checkpoint.generation_config, checkpoint.name)
    mark("build the engine (KV pool, fused decoder)")
    gc.collect()                  # what LLMEngine.from_pretrained ends with (then run_serve resumes the collector)
    gc.freeze()
    startup_gc.resume()
    mark("collect and freeze the loading's objects")
    prompt = checkpoint.tokenizer.encode("def fibonacci(n):")
    for name in ("first request, 8 tokens", "second request, 8 tokens"):
        engine.add_request(name, prompt, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))
        while engine.has_unfinished():
            engine.step()
        mark(name)
    print(json.dumps(rows))


def _phase_rows(env: dict[str, str]) -> list[list]:
    out = subprocess.run([sys.executable, __file__, PHASES_CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def phases(env: dict[str, str], gc_compare: bool) -> None:
    runs = {"GC paused (as served)": _phase_rows(env)}
    if gc_compare:
        runs["GC on (before)"] = _phase_rows({**env, GC_ON_ENV: "1"})
    names = list(runs)
    print("| phase (fresh interpreter, warm caches) | " + " | ".join(f"{n}: wall s | CPU s" for n in names) + " |")
    print("|---" * (1 + 2 * len(names)) + "|")
    for i, (name, *_) in enumerate(runs[names[0]]):
        cells = " | ".join(f"{runs[n][i][1]:.2f} | {runs[n][i][2]:.2f}" for n in names)
        print(f"| {name} | {cells} |")
    totals = []
    for n in names:
        start = [r for r in runs[n] if not r[0].endswith("8 tokens")]
        totals.append(f"**{sum(r[1] for r in start):.2f}** | **{sum(r[2] for r in start):.2f}**")
    print(f"| **to a loaded engine** | {' | '.join(totals)} |\n")


def torch_floor(env: dict[str, str], runs: int = 3) -> None:
    """`import torch` alone, fresh interpreters: the part of start-up lucid cannot cut."""
    code = "import time; w, c = time.perf_counter(), time.process_time(); import torch; " \
           "print(time.perf_counter() - w, time.process_time() - c)"
    results = [tuple(map(float, subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                               check=True).stdout.split())) for _ in range(runs)]
    print(f"floor: `import torch` alone, median of {runs}: {statistics.median(r[0] for r in results):.2f} s wall, "
          f"{statistics.median(r[1] for r in results):.2f} s CPU\n")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process and its children (the engine process) have used, all threads."""
    total = 0.0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def starts(count: int, output: int, env: dict[str, str]) -> None:
    from lucid.bench.server import lucid_server
    from lucid.bench.sweep import concurrency_sweep

    results = []
    for i in range(count + 1):           # the first start warms the caches and is not counted
        server = lucid_server(None, [], env=env)
        with server:
            cpu = cpu_seconds(server.proc.pid)
            idle = tree_memory_bytes(server.proc.pid)
            summary = concurrency_sweep(server.url, [1], rounds=1, input_len=128, output_len=output,
                                        progress=False)[1]
            peak = tree_memory_bytes(server.proc.pid, "VmHWM")
        if i:
            results.append((server.startup_s, idle, peak, summary.output_throughput, cpu))
            print(f"start {i}: healthy after {server.startup_s:.2f} s ({cpu:.2f} CPU-s), idle RSS {idle / 1e9:.3f} GB, "
                  f"peak RSS after one chat {peak / 1e9:.3f} GB, {summary.output_throughput:.1f} tok/s", flush=True)
    print(f"median of {count}: start-up {statistics.median(r[0] for r in results):.2f} s "
          f"({statistics.median(r[4] for r in results):.2f} CPU-s), idle RSS "
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
    parser.add_argument("--gc-compare", action="store_true",
                        help="run the phases a second time with the garbage collector left on (the old start-up)")
    parser.add_argument("--skip-starts", action="store_true")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if not args.skip_phases:
        phases(env, args.gc_compare)
        torch_floor(env)
    if not args.skip_starts:
        starts(args.starts, args.output, env)
    print(f"\nCommand: `{' '.join([os.path.relpath(sys.executable), *sys.argv])}`")


if __name__ == "__main__":
    main()
