"""`lucid serve` with its engine in a process of its own (the default) against `--engine-in-process`, side by side on
the default model: seconds to a healthy /health (warm caches), served output tokens/s at 1 and 16 concurrent streams,
greedy and at temperature 0.7 (128-token prompts and answers, EOS ignored, as compare.py serves lucid), and the peak
resident memory of the whole server (every process of it) after the sweeps. Starts take turns; then both servers
run at once and are swept in turns (an idle one costs the other nothing), so a drift of the machine reaches both
(back-to-back single runs of this box differ by up to 15% at 16 streams); the table gives the medians.

    .venv/bin/python benchmarks/engine_process.py              # ~6 min
    .venv/bin/python benchmarks/engine_process.py --rounds 6 --starts 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import SAMPLED_TEMPERATURE  # noqa: E402

from lucid.bench.server import lucid_server  # noqa: E402
from lucid.bench.sweep import paired_sweep  # noqa: E402

MODES = {"engine process (default)": [], "--engine-in-process": ["--engine-in-process"]}
LEVELS = [1, 16]


def start_ups(extra_args: list[str], starts: int) -> list[float]:
    seconds = []
    for _ in range(starts):
        with lucid_server(None, extra_args) as server:
            seconds.append(server.startup_s)
    return seconds


def sweep(url: str, seed: int, output_len: int) -> dict[str, float]:
    swept = paired_sweep(url, LEVELS, {"greedy": None, "sampled": {"temperature": SAMPLED_TEMPERATURE}}, rounds=1,
                         output_len=output_len, seed=seed, progress=False)
    greedy, sampled = swept["greedy"], swept["sampled"]
    row = {}
    for level in LEVELS:
        row[f"c={level} greedy tok/s"] = greedy[level].output_throughput
        row[f"c={level} T=0.7 tok/s"] = sampled[level].output_throughput
    row["c=1 TTFT greedy (ms)"] = greedy[1].ttft.median
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="sweeps of each server, taking turns (default 4)")
    parser.add_argument("--starts", type=int, default=5, help="starts timed per mode, taking turns (default 5)")
    parser.add_argument("--output", type=int, default=128, help="tokens per answer (default 128)")
    args = parser.parse_args()
    with lucid_server(None):  # a first start writes the caches (packed weights, kernels); not measured
        pass
    rows: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    startup: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.starts):
        for mode, extra in MODES.items():
            startup[mode] += start_ups(extra, 1)
    # Both servers up at once, swept in turns: an idle server costs the other nothing (its engine thread waits).
    servers = {mode: lucid_server(None, extra).start() for mode, extra in MODES.items()}
    try:
        for turn in range(args.rounds):
            for mode, server in servers.items():
                rows[mode].append(sweep(server.url, 10000 * (turn + 1), args.output))
                print(f"round {turn + 1}, {mode}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[mode][-1].items()),
                      flush=True)
        peaks = {mode: (server.peak_rss_bytes() or 0) / 1e9 for mode, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    names = list(MODES)
    print(f"\n| median ({args.starts} starts, {args.rounds} sweeps each, in turns) | " + " | ".join(names)
          + " | ratio |")
    print("|---|---|---|---|")
    table = {"start-up to healthy (s)": [statistics.median(startup[m]) for m in names],
             "peak RSS after the sweeps, all processes (GB)": [peaks[m] for m in names]}
    for key in rows[names[0]][0]:
        table[key] = [statistics.median(r[key] for r in rows[m]) for m in names]
    for key, values in table.items():
        print(f"| {key} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {values[0] / values[1]:.2f}x |")
    print(f"\nCommand: `.venv/bin/python benchmarks/engine_process.py --rounds {args.rounds} --starts {args.starts}`")


if __name__ == "__main__":
    main()
