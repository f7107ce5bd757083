"""benchmarks/sweep_steps.py: the closed loop serves every request and sorts each step by what it ran."""

import pytest


@pytest.fixture(scope="module")
def sweep_steps(benchmark_script):
    return benchmark_script("sweep_steps")


@pytest.fixture(scope="module")
def engine(tiny_model):
    from lucid import LLM

    return LLM(str(tiny_model.hf_dir), dtype="float32").engine


def test_closed_loop_classifies_every_step(sweep_steps, engine, monkeypatch):
    # Ids the tiny vocabulary has; distinct per request, as the script's own prompts are.
    monkeypatch.setattr(sweep_steps, "prompt", lambda k, n: [(k * 31 + i * 7) % 200 + 10 for i in range(n)])
    budget = engine.engine_config.max_num_batched_tokens
    # More prompt tokens than one step's budget: the rest arrive as chunks beside the first ones' decode rows.
    streams, prompt_len = 16, budget // 8
    r = sweep_steps.closed_loop(engine, streams, 2 * streams, prompt_len, 6, 0.0, "t", 0)
    assert r["tokens"] == 2 * streams * 6                        # every request answered in full
    kinds = r["by_kind"]
    assert kinds["prompt only"][0] >= 1 and kinds["decode + prompt chunk"][0] >= 1 and kinds["decode only"][0] >= 1
    assert sum(count for count, _ in kinds.values()) == r["steps"]
    assert sum(seconds for _, seconds in kinds.values()) <= r["wall"]
    assert not engine.has_unfinished()
    assert engine.scheduler.schedule.__name__ == "schedule"      # the scheduler is given back unwrapped
