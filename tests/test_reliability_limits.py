"""Every limit gives a clear 400 that names the field and the limit, and refused requests cost no engine compute:
the engine's step count does not move. (The body-size limit, 413, is tested in test_server_errors.)"""

from __future__ import annotations

import httpx
import pytest
from test_reliability_support import scrape, wait_idle
from test_server_support import TINY_MAX_MODEL_LEN, ServerProcess, shared_server, tiny_server_args

from lucid.sampling_params import MAX_N, MAX_STOP_STRING_CHARS, MAX_STOP_STRINGS
from lucid.server.protocol import MAX_MESSAGES
from lucid.server.serving_completions import MAX_PROMPTS

pytestmark = pytest.mark.timeout(120)

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def tiny_server(tiny_model) -> ServerProcess:
    return shared_server(*tiny_server_args(tiny_model))


def _chat(**body: object) -> dict:
    return {"model": "tiny", "messages": HI, "max_tokens": 1, **body}


# (path, body, the field the error names, words the message must hold)
OVER_THE_LIMIT = [
    ("/v1/chat/completions", _chat(messages=HI * (MAX_MESSAGES + 1)), "messages", f"at most {MAX_MESSAGES}"),
    ("/tokenize", {"messages": HI * (MAX_MESSAGES + 1)}, None, f"at most {MAX_MESSAGES}"),
    ("/v1/chat/completions", _chat(stop=[f"s{i}" for i in range(MAX_STOP_STRINGS + 1)]), "stop",
     f"at most {MAX_STOP_STRINGS}"),
    ("/v1/chat/completions", _chat(stop="x" * (MAX_STOP_STRING_CHARS + 1)), "stop", str(MAX_STOP_STRING_CHARS)),
    ("/v1/chat/completions", _chat(n=MAX_N + 1), "n", str(MAX_N)),
    ("/v1/completions", {"prompt": ["a"] * (MAX_PROMPTS + 1), "max_tokens": 1}, "prompt", f"at most {MAX_PROMPTS}"),
    ("/v1/completions", {"prompt": [7] * (TINY_MAX_MODEL_LEN + 1)}, "prompt", str(TINY_MAX_MODEL_LEN)),
    ("/v1/completions", {"prompt": [7] * 100, "max_tokens": TINY_MAX_MODEL_LEN - 99}, "prompt",
     str(TINY_MAX_MODEL_LEN)),
    ("/v1/completions", {"prompt": "word " * 200_000, "max_tokens": 1}, "prompt", "maximum context length"),
    ("/v1/chat/completions", _chat(messages=[{"role": "user", "content": "word " * 200_000}]), "messages",
     "maximum context length"),
]


def test_limits_are_clear_400s_that_cost_no_engine_step(tiny_server):
    url = tiny_server.url
    before = wait_idle(url).metrics
    for path, body, param, words in OVER_THE_LIMIT:
        response = httpx.post(f"{url}{path}", json=body, timeout=60)
        assert response.status_code == 400, (path, response.text[:300])
        error = response.json()["error"]
        assert error["param"] == param and words in error["message"], (path, error)
    after = scrape(url)
    assert after["lucid_engine_steps"] == before["lucid_engine_steps"]
    assert after["lucid_prompt_tokens_total"] == before["lucid_prompt_tokens_total"]


def test_values_at_the_limits_are_accepted(tiny_server):
    url = tiny_server.url
    at_the_limit = [
        ("/v1/chat/completions", _chat(stop=[f"s{i}" for i in range(MAX_STOP_STRINGS)])),
        ("/v1/chat/completions", _chat(stop="x" * MAX_STOP_STRING_CHARS, n=MAX_N)),
        ("/v1/completions", {"prompt": [7] * (TINY_MAX_MODEL_LEN - 1), "max_tokens": 1}),
        ("/tokenize", {"messages": HI * MAX_MESSAGES}),
    ]
    for path, body in at_the_limit:
        response = httpx.post(f"{url}{path}", json=body, timeout=60)
        assert response.status_code == 200, (path, response.text[:300])
