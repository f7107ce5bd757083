"""Failures a healthy subprocess cannot show on demand — a slow load, a stream that breaks mid-way, a dead engine —
staged in-process: the real app and tiny engine under uvicorn in a thread, the engine wrapped to misbehave."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import uvicorn
from test_server_support import free_port

from lucid.errors import EngineDeadError
from lucid.server.app import build_app
from lucid.server.state import ServerSettings, ServerState

pytestmark = pytest.mark.timeout(120)


class MisbehavingEngine:
    """The real engine, except that streams fail after `fail_after` outputs and `dead_error` can be forced."""

    def __init__(self, engine) -> None:  # noqa: ANN001 - lucid.engine.async_engine.AsyncEngine
        self._engine = engine
        self.fail_after: int | None = None
        self.dead_error: BaseException | None = None

    def __getattr__(self, name: str):  # noqa: ANN204 - everything else is the real engine's
        return getattr(self._engine, name)

    async def generate(self, prompt_token_ids, params, request_id):  # noqa: ANN001, ANN201
        count = 0
        async for out in self._engine.generate(prompt_token_ids, params, request_id):
            if self.fail_after is not None and count >= self.fail_after:
                raise EngineDeadError("simulated: the engine loop died")
            count += 1
            yield out


@pytest.fixture(scope="module")
def staged(tiny_model) -> Iterator[tuple[str, ServerState, threading.Event]]:
    from lucid.engine.async_engine import AsyncEngine

    release = threading.Event()

    def load() -> MisbehavingEngine:
        release.wait(60)  # loading takes as long as the test wants
        return MisbehavingEngine(AsyncEngine.from_pretrained(str(tiny_model.hf_dir), dtype="float32"))

    port = free_port()
    state = ServerState(load, ServerSettings(served_model_names=["tiny"], port=port))
    server = uvicorn.Server(uvicorn.Config(build_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield url, state, release
    server.should_exit = True
    thread.join(30)


def _wait_health(url: str, status: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/health").status_code != status:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_503_while_loading(staged):
    url, state, release = staged
    health = httpx.get(f"{url}/health")
    assert health.status_code == 503 and health.headers["retry-after"] and health.json()["status"] == "loading"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.models.list()
    assert info.value.status_code == 503 and info.value.response.headers["retry-after"]
    assert httpx.get(f"{url}/metrics").status_code == 200  # metrics answer while loading
    release.set()
    _wait_health(url, 200)
    assert client.models.list().data[0].id == "tiny"


def test_stream_failing_midway_ends_with_an_error_event(staged):
    url, state, release = staged
    release.set()
    _wait_health(url, 200)
    state.engine.fail_after = 2
    try:
        body = {"prompt": "Hello", "max_tokens": 20, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
            assert response.status_code == 200
            data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert data[-1] == "[DONE]"
        error = json.loads(data[-2])["error"]
        assert "engine" in error["message"] and error["type"] == "service_unavailable"
        assert len(data) == 4  # two chunks, the error, [DONE]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIError):
            for _ in client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                                    max_tokens=20, stream=True, extra_body={"ignore_eos": True}):
                pass
        with pytest.raises(openai.APIStatusError) as info:  # not streamed: a 503, before any byte of a response
            client.completions.create(model="tiny", prompt="Hi", max_tokens=20, extra_body={"ignore_eos": True})
        assert info.value.status_code == 503
    finally:
        state.engine.fail_after = None
    assert httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_dead_engine_makes_health_and_requests_503(staged):
    url, state, release = staged
    release.set()
    _wait_health(url, 200)
    state.engine.dead_error = RuntimeError("simulated crash")
    try:
        assert httpx.get(f"{url}/health").status_code == 503
        response = httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        assert response.status_code == 503 and "simulated crash" in response.json()["error"]["message"]
    finally:
        state.engine.dead_error = None
    _wait_health(url, 200)
