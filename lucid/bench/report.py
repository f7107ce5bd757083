"""A benchmark's summary as a terminal table, a markdown row, or JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from lucid.bench.stats import BenchSummary, Distribution


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{status}: {count}" for status, count in errors.items()) or "none"


def summary_rows(summary: BenchSummary) -> list[tuple[str, str]]:
    """(label, value) pairs of the outcome and throughput, in reading order."""
    rows = [
        ("Successful requests", str(summary.completed)),
        ("Failed requests", f"{summary.failed} ({errors_text(summary.errors)})"),
        ("Benchmark duration (s)", fmt(summary.duration_s, 2)),
        ("Mean prompt / output tokens", f"{fmt(summary.mean_prompt_tokens)} / {fmt(summary.mean_output_tokens)}"),
        ("Request throughput (req/s)", fmt(summary.request_throughput, 2)),
        ("Output token throughput (tok/s)", fmt(summary.output_throughput, 1)),
        ("Input token throughput (tok/s)", fmt(summary.input_throughput, 1)),
    ]
    if summary.short_outputs:
        rows.append(("Shorter than asked (EOS not suppressed?)", str(summary.short_outputs)))
    return rows


def latency_rows(summary: BenchSummary) -> list[tuple[str, Distribution]]:
    return [("Time to first token", summary.ttft), ("Time per output token", summary.tpot),
            ("Inter-token latency", summary.itl), ("End-to-end latency", summary.latency)]


def print_summary(summary: BenchSummary, title: str, console: Console | None = None) -> None:
    """Two tables: outcome and throughput, then each latency's median / p90 / p99 / mean in ms."""
    console = console or Console()
    outcome = Table(title=title, show_header=False, title_justify="left")
    outcome.add_column(style="bold")
    outcome.add_column(justify="right")
    for label, value in summary_rows(summary):
        outcome.add_row(label, value)
    latencies = Table()
    for column in ("latency (ms)", "median", "p90", "p99", "mean"):
        latencies.add_column(column, justify="left" if column.startswith("latency") else "right")
    for label, dist in latency_rows(summary):
        latencies.add_row(label, *(fmt(v, 2) for v in (dist.median, dist.p90, dist.p99, dist.mean)))
    console.print(outcome)
    console.print(latencies)


def to_json(summary: BenchSummary, **context: Any) -> str:
    """The summary (and any context, e.g. the settings) as JSON; NaN (no data) becomes null."""
    return json.dumps(_nan_to_none({**context, **summary.to_dict()}), indent=2)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
