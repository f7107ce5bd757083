"""Micro-benchmark: lucid's Q4/Q8 kernels vs PyTorch's int4/int8 CPU kernels and bf16 F.linear.

For each of the 0.5B model's matmul shapes (out x in) at a few row counts M, prints ms per call and the
effective bandwidth (bytes of the weight format / time): decode is bound by weight bytes, so GB/s near the
machine's memory bandwidth means the kernel is as fast as it can be.

    .venv/bin/python benchmarks/kernels.py [--m 1 8] [--threads 2] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial

import torch
import torch.nn.functional as F

from lucid import kernels
from lucid.layers.quantized_linear import Int4Linear, Int8Linear

SHAPES = [(1152, 896), (896, 896), (9728, 896), (896, 4864), (151936, 896)]


COLD_BYTES = 128 << 20  # cycle through weight copies this large in all, well past the L3, as in real decode


def time_call(fns: list, x: torch.Tensor, seconds: float) -> tuple[float, float]:
    """(best, median) ms of one call over about `seconds` of repeats, cycling through copies `fns`."""
    for fn in fns[:3]:
        fn(x)
    times = []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds or len(times) < 10:
        fn = fns[i % len(fns)]
        i += 1
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[0] * 1e3, times[len(times) // 2] * 1e3


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    ap.add_argument("--median", action="store_true", help="print the median instead of the best time")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {args.threads} threads, load average {load:.2f} "
          f"({'busy' if load > 0.5 else 'idle'} machine at start)")
    if not kernels.available():
        print(f"lucid kernels unavailable: {kernels.unavailable_reason()}")
    from lucid.kernels.linear import Q4Linear, Q8Linear

    print(f"{'shape':>12} {'M':>3} | " + " | ".join(f"{n:>16}" for n in ("lucid q4", "torch int4", "lucid q8",
                                                                          "torch int8", "bf16 linear")))
    torch.manual_seed(0)
    for n, k in SHAPES:
        w = torch.randn(n, k, dtype=torch.bfloat16) * 0.02
        layers = {}

        def build(make, size_of):
            """Enough copies of one layer to total COLD_BYTES (at most 64), and the bytes of one."""
            first = make()
            size = size_of(first)
            return [first] + [make() for _ in range(min(64, -(-COLD_BYTES // size)) - 1)], size

        if kernels.available():
            layers["lucid q4"] = build(lambda w=w: Q4Linear(w, None, torch.bfloat16),
                                       lambda q: nbytes(q.qweight, q.scales, q.mins))
            layers["lucid q8"] = build(lambda w=w: Q8Linear(w, None, torch.bfloat16),
                                       lambda q: nbytes(q.qweight, q.scales))
        layers["torch int4"] = build(lambda w=w: Int4Linear(w, None, torch.bfloat16),
                                     lambda q: nbytes(q.weight, q.scales_and_zeros))
        layers["torch int8"] = build(lambda w=w: Int8Linear(w, None, torch.bfloat16),
                                     lambda q: nbytes(q.weight, q.scales))
        layers["bf16 linear"] = build(lambda w=w: partial(F.linear, weight=w.clone()),
                                      lambda f: nbytes(f.keywords["weight"]))
        for m in args.m:
            x = torch.randn(m, k, dtype=torch.bfloat16)
            cells = []
            for name in ("lucid q4", "torch int4", "lucid q8", "torch int8", "bf16 linear"):
                if name not in layers:
                    cells.append(f"{'-':>16}")
                    continue
                fns, size = layers[name]
                with torch.inference_mode():
                    best, median = time_call(fns, x, args.seconds)
                ms = median if args.median else best
                cells.append(f"{ms:7.3f}ms {size / ms / 1e6:5.1f}GB/s")
            print(f"{n:>6}x{k:<5} {m:>3} | " + " | ".join(cells), flush=True)
        del layers
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
