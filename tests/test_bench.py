"""`lucid bench`: the summary math on hand-made timings, prompt fitting, and real runs against the tiny model."""

from __future__ import annotations

import asyncio
import json
import math
import random

import pytest
from test_server_support import shared_server, tiny_server_args

from lucid.bench import RequestResult, benchmark, percentile, summarize
from lucid.bench.cli import main as bench_main
from lucid.bench.prompts import fit_prompt


def test_percentile_interpolates_between_ranks():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_summary_of_hand_made_timings():
    results = [
        RequestResult(ok=True, status="200", latency=1.0, ttft=0.1, itl=[0.3, 0.3, 0.3], prompt_tokens=10,
                      output_tokens=4, requested_tokens=4),
        RequestResult(ok=True, status="200", latency=2.0, ttft=0.5, itl=[0.5, 0.5, 0.5], prompt_tokens=10,
                      output_tokens=4, requested_tokens=4),
        RequestResult(ok=False, status="429"),
        RequestResult(ok=False, status="429"),
        RequestResult(ok=False, status="timeout"),
    ]
    s = summarize(results, duration_s=4.0)
    assert (s.completed, s.failed, s.errors) == (2, 3, {"429": 2, "timeout": 1})
    assert s.output_throughput == 2.0 and s.request_throughput == 0.5 and s.input_throughput == 5.0
    assert s.ttft.median == pytest.approx(300.0) and s.ttft.count == 2
    assert s.tpot.median == pytest.approx(400.0)   # ((1.0 - 0.1) / 3 + (2.0 - 0.5) / 3) / 2 s
    assert s.itl.count == 6 and s.itl.median == pytest.approx(400.0) and s.itl.p90 == pytest.approx(500.0)
    assert s.short_outputs == 0


def test_tpot_needs_two_tokens():
    assert RequestResult(ok=True, status="200", latency=1.0, ttft=0.2, output_tokens=1).tpot is None
    assert RequestResult(ok=True, status="200", latency=1.0, ttft=0.2, output_tokens=5).tpot == pytest.approx(0.2)


def test_fit_prompt_hits_the_length_with_a_tokenizer():
    async def count(text: str) -> int:  # a made-up tokenizer: two tokens per word, one per digit
        return sum(len(word) if word.isdigit() else 2 for word in text.replace(":", " ").split())

    for length in (7, 8, 64, 301):
        prompt, n = asyncio.run(fit_prompt(count, random.Random(length), length, index=3))
        assert n == asyncio.run(count(prompt)) and length - 1 <= n <= length


@pytest.fixture(scope="module")
def tiny_url(tiny_model):
    return shared_server(*tiny_server_args(tiny_model)).url


def _check_ordered(dist: dict) -> None:
    assert 0 < dist["median"] <= dist["p90"] <= dist["p99"]


def test_bench_cli_against_a_running_server(tiny_url, capsys):
    code = bench_main([tiny_url, "--num-prompts", "6", "--concurrency", "3", "--input-len", "24", "--output-len", "8",
                       "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["completed"] == 6 and out["failed"] == 0 and out["errors"] == {}
    assert out["mean_output_tokens"] == 8 and out["short_outputs"] == 0
    assert out["mean_prompt_tokens"] == 24          # fitted with the server's /tokenize
    for key in ("ttft", "tpot", "itl", "latency"):
        _check_ordered(out[key])
    assert out["ttft"]["median"] < out["latency"]["median"]
    assert out["output_throughput"] > 0


def test_poisson_arrivals_on_chat(tiny_url):
    result = asyncio.run(benchmark(tiny_url, num_prompts=5, input_len=80, output_len=6, rate=20.0, endpoint="chat",
                                   progress=False))
    s = result.summary
    assert s.completed == 5 and s.mean_output_tokens == 6 and s.mean_prompt_tokens == 80
    starts = sorted(r.start for r in result.results)
    assert starts[-1] > starts[0]                    # spread out in time, not all at once


def test_bench_starts_its_own_server(tiny_model, capsys):
    code = bench_main(["--model", str(tiny_model.hf_dir), "--num-prompts", "3", "--output-len", "4",
                       "--input-len", "16", "--json", "--serve-args", "--dtype float32 --max-model-len 256"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["completed"] == 3 and out["mean_output_tokens"] == 4


def test_unreachable_server_is_a_clear_error(capsys):
    from lucid.bench.server import free_port

    assert bench_main([f"http://127.0.0.1:{free_port()}", "--num-prompts", "1"]) == 2
    assert "lucid bench" in capsys.readouterr().err


def test_paired_sweep_runs_the_variants_in_turn_at_each_level_with_their_own_prompts(monkeypatch):
    from lucid.bench import sweep

    calls = []

    def fake_sweep(url, levels, *, rounds, input_len, output_len, extra_body, progress, seed):
        calls.append((levels[0], extra_body, seed))
        return {levels[0]: f"summary {levels[0]} {seed}"}

    monkeypatch.setattr(sweep, "concurrency_sweep", fake_sweep)
    variants = {"greedy": None, "sampled": {"temperature": 0.7}}
    out = sweep.paired_sweep("http://x", [1, 16], variants, seed=20000, progress=False)
    assert [(level, body) for level, body, _ in calls] == [(1, None), (1, {"temperature": 0.7}),
                                                           (16, None), (16, {"temperature": 0.7})]
    seeds = [seed for _, _, seed in calls]
    assert seeds == [20000, 21000, 20000, 21000]   # concurrency_sweep adds the level: no two runs share prompts
    assert out == {"greedy": {1: "summary 1 20000", 16: "summary 16 20000"},
                   "sampled": {1: "summary 1 21000", 16: "summary 16 21000"}}


def test_paired_sweep_against_a_running_server(tiny_url):
    from lucid.bench.sweep import paired_sweep

    out = paired_sweep(tiny_url, [1, 2], {"greedy": None, "sampled": {"temperature": 0.7, "seed": 1}}, rounds=1,
                       input_len=16, output_len=4, progress=False)
    for variant in ("greedy", "sampled"):
        for level in (1, 2):
            summary = out[variant][level]
            assert summary.completed == 4 and summary.failed == 0 and summary.mean_output_tokens == 4
