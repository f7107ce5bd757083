"""`lucid trace` with a grammar: each step shows how many tokens the mask allowed, and the output obeys it."""

from __future__ import annotations

import json

from lucid.cli import main


def test_trace_shows_the_mask_of_each_step(tiny_model, capsys):
    code = main(["trace", "def main():", "--model", str(tiny_model.hf_dir), "--dtype", "float32", "-q", "none",
                 "--raw", "--temperature", "0", "--steps", "12", "--choice", "alpha", "--choice", "beta", "--json"])
    assert code == 0
    trace = json.loads(capsys.readouterr().out)
    allowed = [s["allowed"] for s in trace["steps"]]
    assert trace["text"] in ("alpha", "beta")
    assert all(a is not None and a >= 1 for a in allowed)
    assert allowed[0] < 200          # the first step allows only tokens that start "alpha" or "beta"
    assert allowed[-1] <= 2          # the last: the end-of-sequence tokens


def test_trace_prints_the_allowed_count_and_refuses_a_bad_regex(tiny_model, capsys):
    args = ["trace", "x", "--model", str(tiny_model.hf_dir), "--dtype", "float32", "-q", "none", "--raw",
            "--temperature", "0", "--steps", "4"]
    assert main([*args, "--regex", "[0-9]+"]) == 0
    assert "grammar allowed" in capsys.readouterr().out
    assert main([*args, "--regex", "(oops"]) == 2
    assert "unclosed" in capsys.readouterr().err
