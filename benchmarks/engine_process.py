"""`lucid serve` with its engine in a process of its own (the default) against `--engine-in-process`, side by side on
the default model: seconds to a healthy /health (warm caches), served output tokens/s at 1 and 16 concurrent streams,
greedy and at temperature 0.7 (128-token prompts and answers, EOS suppressed, as compare.py serves), and the peak
resident memory of the whole server (every process of it) after the sweep. The two modes take turns, `--rounds`
times, so a drift of the machine reaches both; the table gives the median per mode.

    .venv/bin/python benchmarks/engine_process.py              # ~4 min
    .venv/bin/python benchmarks/engine_process.py --rounds 3 --starts 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import NO_EOS_BIAS, SAMPLED_TEMPERATURE, _stop_ids_of  # noqa: E402

from lucid.bench.server import lucid_server  # noqa: E402
from lucid.bench.sweep import concurrency_sweep  # noqa: E402
from lucid.loader.default_model import default_model_path  # noqa: E402

MODES = {"engine process (default)": [], "--engine-in-process": ["--engine-in-process"]}
LEVELS = [1, 16]


def one_round(extra_args: list[str], body: dict, starts: int, output_len: int) -> dict[str, float]:
    startups = []
    for _ in range(starts - 1):  # starts only: the last start below also serves
        with lucid_server(None, extra_args) as server:
            startups.append(server.startup_s)
    with lucid_server(None, extra_args) as server:
        startups.append(server.startup_s)
        greedy = concurrency_sweep(server.url, LEVELS, rounds=1, output_len=output_len, extra_body=body,
                                   progress=False)
        sampled = concurrency_sweep(server.url, LEVELS, rounds=1, output_len=output_len, seed=1000, progress=False,
                                    extra_body={**body, "temperature": SAMPLED_TEMPERATURE})
        peak = server.peak_rss_bytes() or 0
    row = {"start-up (s)": statistics.median(startups), "peak RSS, all processes (GB)": peak / 1e9}
    for level in LEVELS:
        row[f"c={level} greedy tok/s"] = greedy[level].output_throughput
        row[f"c={level} T=0.7 tok/s"] = sampled[level].output_throughput
    row["c=1 TTFT greedy (ms)"] = greedy[1].ttft.median
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="turns of each mode (default 2)")
    parser.add_argument("--starts", type=int, default=3, help="starts timed per round (default 3)")
    parser.add_argument("--output", type=int, default=128, help="tokens per answer (default 128)")
    args = parser.parse_args()
    body = {"logit_bias": {str(i): NO_EOS_BIAS for i in _stop_ids_of(str(default_model_path(progress=False)))}}
    with lucid_server(None):  # a first start writes the caches (packed weights, kernels); not measured
        pass
    rows: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for turn in range(args.rounds):
        for mode, extra in MODES.items():
            rows[mode].append(one_round(extra, body, args.starts, args.output))
            print(f"round {turn + 1}, {mode}: {rows[mode][-1]}", flush=True)
    names = list(MODES)
    print(f"\n| median of {args.rounds} rounds | " + " | ".join(names) + " | ratio |")
    print("|---|---|---|---|")
    for key in rows[names[0]][0]:
        values = [statistics.median(r[key] for r in rows[mode]) for mode in names]
        print(f"| {key} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {values[0] / values[1]:.2f}x |")
    print(f"\nCommand: `.venv/bin/python benchmarks/engine_process.py --rounds {args.rounds} --starts {args.starts}`")


if __name__ == "__main__":
    main()
