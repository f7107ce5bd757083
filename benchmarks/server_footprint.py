"""Start-up time and memory of `lucid serve` and llama.cpp's `llama-server`, one after another.

For each server: seconds from launch to a healthy /health (warm caches: run it twice, read the second), resident
memory once healthy (idle), then peak resident memory after 16 concurrent streamed requests (--output tokens each).
  lucid default   `lucid serve` as a user starts it (KV pool sized by the default rule)
  lucid c=N       lucid with a KV pool of exactly N tokens and 16 sequences (llama-server's capacity)
  llama-server    `llama-server -c N -np 16` (built by benchmarks/llama_server.py)

    .venv/bin/python benchmarks/server_footprint.py --context 8192
    .venv/bin/python benchmarks/server_footprint.py --context 8192 --only capacity   # lucid alone, ~1 min
"""

from __future__ import annotations

import argparse
import os
import sys

from compare import NO_EOS_BIAS, _stop_ids_of, kv_bytes_per_token
from llama_server import ensure_built

from lucid.bench.server import ServerProcess, lucid_server, tree_memory_bytes
from lucid.bench.sweep import concurrency_sweep


def footprint(server: ServerProcess, output_len: int, extra_body: dict | None) -> dict[str, float]:
    with server:
        idle = tree_memory_bytes(server.proc.pid)
        summary = concurrency_sweep(server.url, [16], rounds=1, input_len=128, output_len=output_len,
                                    extra_body=extra_body, progress=False)[16]
        return {"startup_s": server.startup_s, "idle_gb": idle / 1e9, "peak_gb": server.peak_rss_bytes() / 1e9,
                "tok_s_c16": summary.output_throughput}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--output", type=int, default=64)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--only", nargs="+", choices=["default", "capacity", "llama"],
                        default=["default", "capacity", "llama"],
                        help="which servers: lucid as a user starts it, lucid at --context tokens, llama-server")
    args = parser.parse_args()
    from lucid.loader import default_model_path

    gguf = str(default_model_path())
    env = {"OMP_NUM_THREADS": str(args.threads)}
    pool = str(args.context * kv_bytes_per_token(gguf))
    stops = {"logit_bias": {str(t): NO_EOS_BIAS for t in _stop_ids_of(gguf)}}
    binary = str(ensure_built()) if "llama" in args.only else "llama-server"   # built only when it will run
    llama = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", "{port}", "-t", str(args.threads),
             "-c", str(args.context), "-np", "16", "--no-webui"]
    servers = {
        ("default", "lucid default"): lambda: (lucid_server(gguf, [], env=env), None),
        ("capacity", f"lucid c={args.context}"): lambda: (
            lucid_server(gguf, ["--max-num-seqs", "16", "--kv-cache-memory", pool], env=env), None),
        ("llama", f"llama-server -c {args.context} -np 16"): lambda: (ServerProcess(llama, env=env), stops),
    }
    print("| server | start-up, warm (s) | idle RSS (GB) | peak RSS after 16 streams (GB) | tok/s at c=16 |")
    print("|---|---|---|---|---|")
    for (kind, name), make in servers.items():
        if kind not in args.only:
            continue
        server, body = make()
        footprint(server, 8, body)               # the first start warms the caches (packed weights, page cache)
        server, body = make()
        r = footprint(server, args.output, body)
        print(f"| {name} | {r['startup_s']:.2f} | {r['idle_gb']:.2f} | {r['peak_gb']:.2f} | {r['tok_s_c16']:.1f} |",
              flush=True)
    print(f"\nCommand: `{' '.join([os.path.relpath(sys.executable), *sys.argv])}`")


if __name__ == "__main__":
    main()
