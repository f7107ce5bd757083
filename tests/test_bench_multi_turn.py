"""The multi-turn workload's token account, and cluster_bench's report of partial runs (no server, no model)."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict
from pathlib import Path

from lucid.bench.multi_turn import TurnRecord, account

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "cluster_bench.py"


def turn(conversation: int, index: int, prompt: int, cached: int, completion: int = 48) -> TurnRecord:
    return TurnRecord(conversation, index, prompt, cached, completion, "length", 0.1)


def test_uncached_tokens_are_split_by_where_they_came_from():
    records = [
        turn(0, 0, 196, 0),       # the first turn: nothing cached
        turn(0, 1, 280, 240),     # the previous turn wrote K/V for 196 + 48 - 1 = 243 tokens: 15 whole blocks
        turn(1, 0, 195, 176),     # the system prompt's 11 blocks, computed by conversation 0
        turn(1, 1, 278, 0),       # sent where its history is not: 240 tokens lost
    ]
    total, by_turn = account(records, block_size=16)
    parts = (total.first_turns, total.new_messages, total.partial_blocks, total.lost_history)
    assert parts == (215, 37 + 36, 3 + 2, 240)
    assert total.prompt - total.cached == total.first_turns + total.new_messages + total.partial_blocks \
        + total.lost_history
    assert total.hit_rate == 416 / 949
    assert total.hit_rate_without_lost_history == (416 + 240) / 949
    assert by_turn[0].requests == 2 and by_turn[1].lost_history == 240 and by_turn[1].cached == 240


def test_the_previous_turns_last_token_and_partial_block_are_not_counted_as_lost():
    # 160 + 17 - 1 = 176 tokens computed: exactly 11 blocks, all found; the rest of the prompt is the new message.
    total, _ = account([turn(0, 0, 160, 0, completion=17), turn(0, 1, 210, 176)], block_size=16)
    assert (total.partial_blocks, total.lost_history, total.new_messages) == (0, 0, 34)


def load_bench():
    spec = importlib.util.spec_from_file_location("cluster_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_partial_run_reports_what_it_measured_and_every_error():
    bench = load_bench()
    total, by_turn = account([turn(0, 0, 196, 0), turn(0, 1, 280, 240)], block_size=16)
    by_turn_dicts = {t: asdict(a) for t, a in by_turn.items()}
    results = {
        "prefix": {"errors": {"throughput": "RuntimeError: 3 requests failed\n--- server log tail ---\n..."},
                   "seconds": {"total": 100.0}, "startup_s": 30.0,
                   "multi-turn": {"hit_rate": total.hit_rate, "hit_rate_without_lost_history": 0.5,
                                  "follow_up_ttft_ms": 900.0, "requests_by_replica": [25.0, 15.0],
                                  "account": asdict(total), "account_by_turn": by_turn_dicts}},
        "default": {"errors": {"startup": "ServerError: exited with 1"}, "seconds": {}},
    }
    text = bench.report(results)
    assert f"{total.hit_rate:.3f}" in text and "requests per replica 25/15" in text
    assert "default / startup: ServerError" in text and "prefix / throughput: RuntimeError" in text
    assert "not measured" in text          # the TTFT and throughput ratios lack their single-server side
    assert "| prefix | all | 2 | 476 | 240 |" in text
