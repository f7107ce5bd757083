"""`lucid serve` with its engine in a process of its own (the default): requests, glass-box looks and grammars cross
to it; either process dying takes the other with it, and the front says why."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest
from test_server_support import ServerProcess, tiny_server_args

pytestmark = pytest.mark.timeout(180)


def _engine_child(server: ServerProcess) -> psutil.Process:
    children = psutil.Process(server.proc.pid).children()
    assert len(children) == 1, children  # the engine process, nothing else
    return children[0]


def _wait_exit(process: psutil.Process, timeout: float) -> bool:
    try:
        process.wait(timeout)
    except psutil.TimeoutExpired:
        return False
    return True


def test_requests_looks_and_grammars_cross_to_the_engine_process(tiny_model):
    server = ServerProcess(*tiny_server_args(tiny_model))
    try:
        server.wait_ready()
        engine = _engine_child(server)
        # The front never imports torch: its memory map holds no libtorch; the engine's does.
        front_libs = {m.path for m in psutil.Process(server.proc.pid).memory_maps()}
        assert not [p for p in front_libs if "libtorch" in p]
        assert [m.path for m in engine.memory_maps() if "libtorch" in m.path]

        chat = server.client().chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0)
        assert chat.usage.completion_tokens >= 1 and chat.choices[0].finish_reason in ("stop", "length")
        view = httpx.get(f"{server.url}/glassbox/engine", timeout=30).json()
        assert view["stats"]["num_steps"] >= 1 and view["pool"]
        assert view["model"] == "tiny"  # the served name, not the engine's (the folder's)
        bad = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format", bad.text
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 5 and "did not stop" not in server.log(), server.log()[-2000:]
        assert _wait_exit(engine, 1)
    finally:
        server.stop(signal.SIGKILL)


def test_a_killed_engine_process_stops_the_server_with_exit_1(tiny_model):
    server = ServerProcess(*tiny_server_args(tiny_model))
    try:
        server.wait_ready()
        os.kill(_engine_child(server).pid, signal.SIGKILL)
        assert server.proc.wait(30) == 1
        assert "the engine process exited (exit code -9)" in server.log()
    finally:
        server.stop(signal.SIGKILL)


def test_the_engine_process_ends_when_the_front_is_killed(tiny_model):
    server = ServerProcess(*tiny_server_args(tiny_model))
    try:
        server.wait_ready()
        engine = _engine_child(server)
        server.proc.kill()
        assert _wait_exit(engine, 15), "the engine process outlived its front"
    finally:
        server.stop(signal.SIGKILL)


def test_engine_in_process_keeps_one_process(tiny_model):
    server = ServerProcess(*tiny_server_args(tiny_model), "--engine-in-process")
    try:
        server.wait_ready()
        assert psutil.Process(server.proc.pid).children() == []
        chat = server.client().chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0)
        assert chat.usage.completion_tokens >= 1
        started = time.monotonic()
        assert server.stop() == 0 and time.monotonic() - started < 30
    finally:
        server.stop(signal.SIGKILL)
