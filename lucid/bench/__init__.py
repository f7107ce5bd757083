"""Serving benchmarks: `lucid bench`, and the measuring core the scripts in benchmarks/ reuse."""

from lucid.bench.client import Target
from lucid.bench.prompts import BenchRequest, make_requests
from lucid.bench.runner import BenchResult, benchmark, run_benchmark, served_model
from lucid.bench.server import ServerProcess, lucid_server
from lucid.bench.stats import BenchSummary, Distribution, RequestResult, percentile, summarize

__all__ = [
    "BenchRequest", "BenchResult", "BenchSummary", "Distribution", "RequestResult", "ServerProcess", "Target",
    "benchmark", "lucid_server", "make_requests", "percentile", "run_benchmark", "served_model", "summarize",
]
