"""Serving benchmarks: `lucid bench`, and the measuring core the scripts in benchmarks/ reuse.

The names below are imported on first use (httpx and the rest load only then): `lucid serve` builds the whole
command line, `lucid bench`'s arguments included, and should not pay for them.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "Target": "client", "BenchRequest": "prompts", "make_requests": "prompts", "BenchResult": "runner",
    "benchmark": "runner", "run_benchmark": "runner", "served_model": "runner", "ServerProcess": "server",
    "lucid_server": "server", "BenchSummary": "stats", "Distribution": "stats", "RequestResult": "stats",
    "percentile": "stats", "summarize": "stats",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'lucid.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lucid.bench.{_HOMES[name]}"), name)
