"""The engine in a process of its own (lucid.engine.engine_process / process_engine), on the tiny model: the same
tokens as in one process, the engine's errors as themselves, aborts, glass-box looks, and both processes' deaths."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from functools import partial

import pytest

from lucid.config import EngineConfig
from lucid.engine.async_engine import AsyncEngine
from lucid.engine.engine_process import EngineSpec
from lucid.engine.process_engine import EngineLauncher, ProcessEngine
from lucid.errors import ContextLengthError, EngineDeadError, ModelLoadError, PoolBusyError, SamplingParamsError
from lucid.glassbox.engine_looks import engine_view, explain_token
from lucid.sampling_params import SamplingParams
from lucid.structured.spec import GrammarSpec, StructuredOutputError

pytestmark = pytest.mark.timeout(120)


def limits(device: str) -> EngineConfig:
    return EngineConfig(max_model_len=256, max_num_seqs=4)


def launch(model: str, method: str = "spawn") -> EngineLauncher:
    return EngineLauncher(EngineSpec(model, limits, device="cpu", dtype="float32", quantization="none"), method=method)


@pytest.fixture(scope="module")
def engine(tiny_model):
    """One engine process for the module (spawned: pytest's process has threads); its tokenizer fetched from it."""
    running = launch(str(tiny_model.hf_dir)).wait_ready(None)
    running.start()
    yield running
    running.shutdown()


async def collect(engine, prompt, params, request_id):
    return [out async for out in engine.generate(prompt, params, request_id)]


def greedy(n: int = 12) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)


def test_same_tokens_as_in_one_process(engine, tiny_model):
    local = AsyncEngine.from_pretrained(str(tiny_model.hf_dir), dtype="float32", engine_config=limits("cpu"))
    local.start()
    try:
        prompt = engine.tokenizer.encode("hello world")
        for params in (greedy(), SamplingParams(max_tokens=12, temperature=0.8, seed=7, ignore_eos=True, logprobs=2)):
            there = asyncio.run(collect(engine, prompt, params, "x"))
            here = asyncio.run(collect(local, prompt, params, "x"))
            assert there[-1].outputs[0].token_ids == here[-1].outputs[0].token_ids
            assert there[-1].outputs[0].text == here[-1].outputs[0].text
            assert [lp.logprob for lp in there[-1].outputs[0].logprobs or []] == \
                [lp.logprob for lp in here[-1].outputs[0].logprobs or []]
            assert there[-1].finished and [o.outputs[0].delta_token_ids for o in there][0]
    finally:
        local.shutdown()
    assert engine.model_config.vocab_size == local.model_config.vocab_size
    assert engine.model_name == local.model_name and engine.source_path == local.source_path


def test_engine_errors_arrive_as_themselves(engine):
    with pytest.raises(ContextLengthError, match="maximum context length is 256"):
        asyncio.run(collect(engine, [1] * 300, greedy(), "long"))
    with pytest.raises(SamplingParamsError) as caught:
        asyncio.run(collect(engine, [1], SamplingParams(max_tokens=4, logit_bias={10**9: 1.0}), "bias"))
    assert caught.value.param == "logit_bias"
    bad = GrammarSpec("json", '{"type": "no-such-type"}', "response_format")
    with pytest.raises(StructuredOutputError) as caught:
        asyncio.run(engine.compile_grammar(bad))
    assert caught.value.param == "response_format"
    assert engine.is_running  # none of it hurt the engine


def test_abort_frees_the_row_and_abort_all_finishes_with_abort(engine):
    async def walk_away() -> None:
        stream = engine.generate([1, 2, 3], greedy(200), "gone")
        await stream.__anext__()
        await stream.aclose()  # a client that went away

    async def abort_everything() -> list:
        stream = engine.generate([4, 5, 6], greedy(200), "stopped")
        outs = [await stream.__anext__()]  # running now
        assert engine.abort_all() == 1
        return outs + [out async for out in stream]

    asyncio.run(walk_away())
    outs = asyncio.run(abort_everything())
    assert outs[-1].outputs[0].finish_reason == "abort" and len(outs[-1].outputs[0].token_ids) < 200
    deadline = time.monotonic() + 10
    while engine.stats().num_running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats().num_running == 0 and engine.stats().num_used_blocks == 0


def test_glass_box_looks_run_in_the_engine_process(engine):
    view = asyncio.run(engine.call(partial(engine_view, after=0)))
    assert view["stats"]["num_total_blocks"] > 0 and "pool" in view
    ids = engine.tokenizer.encode("hello world again")
    look = asyncio.run(engine.call(partial(explain_token, ids=ids, prompt_len=len(ids), top=3)))
    assert look["position"] == len(ids) - 1 and look["lens"]
    with pytest.raises((AttributeError, TypeError, Exception), match="pickle|lambda|local"):
        asyncio.run(engine.call(lambda e: 1))  # a closure cannot travel: said at once, nothing hangs


def test_the_pool_busy_error_pickles_as_itself():
    import pickle

    assert isinstance(pickle.loads(pickle.dumps(PoolBusyError("full"))), PoolBusyError)


def test_load_failure_is_raised_by_wait_ready(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        launch(str(tmp_path / "missing.gguf")).wait_ready(None)


def test_killed_engine_process_fails_requests_and_reports_death(tiny_model):
    died: list[BaseException] = []
    victim = launch(str(tiny_model.hf_dir)).wait_ready(None)
    victim.on_death = died.append
    victim.start()

    async def killed_mid_request() -> None:
        stream = victim.generate([1, 2, 3], greedy(250), "doomed")
        await stream.__anext__()
        os.kill(victim._process.pid, signal.SIGKILL)
        with pytest.raises(EngineDeadError, match="engine process exited"):
            async for _ in stream:
                pass

    asyncio.run(killed_mid_request())
    deadline = time.monotonic() + 5
    while not died and time.monotonic() < deadline:  # the reader fails the requests first, then reports
        time.sleep(0.01)
    assert died and not victim.is_running
    with pytest.raises(EngineDeadError):
        asyncio.run(collect(victim, [1], greedy(), "after"))
    victim.shutdown(timeout=1)


def test_engine_process_ignores_ctrl_c_and_ends_when_the_front_goes(tiny_model):
    launcher = launch(str(tiny_model.hf_dir))
    survivor: ProcessEngine = launcher.wait_ready(None)
    os.kill(survivor._process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group: the front drains
    time.sleep(0.5)
    assert survivor._process.is_alive()
    survivor._conn.close()  # the front gone without a word (killed)
    survivor._process.join(10)
    assert not survivor._process.is_alive()
