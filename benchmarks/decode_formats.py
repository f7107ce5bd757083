"""Single-stream decode of lucid's weight formats next to llama.cpp's, on the default GGUF, interleaved.

    .venv/bin/python benchmarks/decode_formats.py                           # mixed, auto, int8 vs llama.cpp
    .venv/bin/python benchmarks/decode_formats.py --schemes mixed --rounds 5

Decode is bound by the bytes of weights read per token, so each format's figure is printed beside its bytes per
token and perplexity. Every measurement is one `compare.py --child` process (greedy, EOS suppressed, `--decode`
tokens after a 16-token prompt; its own median over `--runs`), and the systems take turns round after round
(lucid A, lucid B, ..., llama.cpp, then again): on a shared machine a load that comes and goes then falls on all of
them alike, and the ratios to llama.cpp are taken within each round before the median over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from compare import parse_args as compare_args  # benchmarks/ is on sys.path when this file runs as a script
from compare import run_child

from lucid.bench.report import markdown_table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemes", nargs="+", default=["mixed", "auto", "int8"])
    parser.add_argument("--rounds", type=int, default=3, help="turns of every system (3)")
    parser.add_argument("--runs", type=int, default=2, help="decodes per process, median (2)")
    parser.add_argument("--decode", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-quality", action="store_true", help="skip perplexity and bytes per token")
    args = parser.parse_args()

    def child_args(scheme: str):
        return compare_args(["--quantization", scheme, "--threads", str(args.threads), "--runs", str(args.runs),
                             "--decode", str(args.decode)])

    systems = [*(("lucid", s) for s in args.schemes), ("llama", "")]
    rates: dict[tuple[str, str], list[float]] = {s: [] for s in systems}
    ratios: dict[tuple[str, str], list[float]] = {s: [] for s in systems[:-1]}
    for turn in range(args.rounds):
        got = {}
        for name, scheme in systems:
            result = run_child(name, child_args(scheme or "mixed"))
            got[(name, scheme)] = result.get("decode_tok_s")
            print(f"[decode_formats] round {turn + 1}: {name} {scheme} {got[(name, scheme)]}", file=sys.stderr)
        for system, rate in got.items():
            if rate:
                rates[system].append(rate)
        for system in ratios:
            if got[system] and got[("llama", "")]:
                ratios[system].append(got[system] / got[("llama", "")])
    quality = {}
    if not args.no_quality:
        for name, scheme in systems:
            quality[(name, scheme)] = run_child(f"{name}-quality", child_args(scheme or "mixed"))

    rows = []
    for system in systems:
        name, scheme = system
        q = quality.get(system, {})
        rows.append([f"lucid ({scheme})" if name == "lucid" else "llama.cpp",
                     f"{q['bytes_per_token'] / 1e6:.1f}" if q.get("bytes_per_token") else "-",
                     f"{q['perplexity']:.3f}" if q.get("perplexity") else "-",
                     f"{statistics.median(rates[system]):.1f}" if rates[system] else "-",
                     " ".join(f"{r:.1f}" for r in rates[system]),
                     f"{statistics.median(ratios[system]):.2f}x" if ratios.get(system) else "-"])
    print(markdown_table(["", "weights read per token (MB)", "perplexity", "decode tok/s (median)",
                          "each round", "decode / llama.cpp (median of rounds)"], rows))
    print(f"\n{args.threads} threads, {args.decode} decode tokens, {args.rounds} rounds x {args.runs} runs. Command: "
          f"`{' '.join([os.path.relpath(sys.executable), *sys.argv])}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
