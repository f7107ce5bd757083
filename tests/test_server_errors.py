"""Every bad request gets OpenAI's error object and the right status — raised by the official client as the
matching exception — and the server keeps working afterwards."""

from __future__ import annotations

import concurrent.futures

import httpx
import openai
import pytest
from test_server_support import TINY_MAX_MODEL_LEN, ServerProcess, shared_server, tiny_server_args

pytestmark = pytest.mark.timeout(300)

OK_MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def tiny_server(tiny_model):
    return shared_server(*tiny_server_args(tiny_model))


def _post(server: ServerProcess, path: str, content: bytes | str, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=content, headers={"content-type": "application/json", **headers},
                      timeout=60)


def _assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def _still_works(server: ServerProcess) -> None:
    result = server.client().chat.completions.create(model="tiny", messages=OK_MESSAGES, max_tokens=2)
    assert result.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe", b'{"messages": NaN}'])
def test_malformed_bodies_are_400(tiny_server, raw):
    _assert_error(_post(tiny_server, "/v1/chat/completions", raw), 400)
    _assert_error(_post(tiny_server, "/v1/completions", raw), 400)


def test_lone_surrogates_are_400(tiny_server):
    # JSON may spell a lone surrogate as an escape (no client library can send one raw); it is not valid text.
    raw = '{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    assert _assert_error(_post(tiny_server, "/v1/chat/completions", raw), 400)["param"] == "messages"
    raw = '{"model": "tiny", "prompt": "x", "stop": ["\\udfff"]}'
    assert _assert_error(_post(tiny_server, "/v1/completions", raw), 400)["param"] == "stop"


BAD_CHAT = [
    ({"messages": []}, "messages"),
    ({"messages": "hello"}, "messages"),
    ({"messages": None}, "messages"),
    ({"messages": [{"content": "no role"}]}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"n": 0}, "n"),
    ({"n": 1000}, "n"),
    ({"n": True}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "ten"}, "max_tokens"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"stop": ""}, "stop"),
    ({"stop": [f"s{i}" for i in range(100)]}, "stop"),
    ({"seed": 2**80}, "seed"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"logit_bias": {"word": 1}}, "logit_bias"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),           # no tools to call
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "strnig"}}}}, "response_format"),
    ({"structured_outputs": {"regex": "(unclosed"}}, "structured_outputs"),
]


@pytest.mark.parametrize(("extra", "param"), BAD_CHAT)
def test_invalid_chat_requests_are_400(tiny_server, extra, param):
    body = {"model": "tiny", "messages": OK_MESSAGES, "max_tokens": 2, **extra}
    with pytest.raises(openai.BadRequestError) as info:
        tiny_server.client().post("/chat/completions", body=body, cast_to=object)
    assert info.value.status_code == 400
    assert info.value.body["param"] == param, info.value.body


@pytest.mark.parametrize("prompt", ["", [], [[]], [1, 2, 10**7], [[1], [-5]], [1.5], {"a": 1}])
def test_invalid_prompts_are_400(tiny_server, prompt):
    with pytest.raises(openai.BadRequestError):
        tiny_server.client().completions.create(model="tiny", prompt=prompt, max_tokens=2)


def test_context_length_exceeded_names_both_numbers(tiny_server):
    client = tiny_server.client()
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny", prompt=[5] * 100, max_tokens=TINY_MAX_MODEL_LEN)
    assert info.value.code == "context_length_exceeded"
    assert str(TINY_MAX_MODEL_LEN) in info.value.message and "100" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny", prompt=[5] * (TINY_MAX_MODEL_LEN + 3))
    assert info.value.code == "context_length_exceeded"
    _still_works(tiny_server)


def test_unknown_fields_are_ignored(tiny_server):
    result = tiny_server.client().chat.completions.create(
        model="tiny", messages=OK_MESSAGES, max_tokens=2, user="someone",
        extra_body={"some_future_field": {"x": 1}, "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1})
    assert result.choices


def test_unknown_model_is_404(tiny_server):
    with pytest.raises(openai.NotFoundError) as info:
        tiny_server.client().chat.completions.create(model="gpt-4o", messages=OK_MESSAGES, max_tokens=2)
    assert info.value.code == "model_not_found"
    _assert_error(httpx.get(f"{tiny_server.url}/v1/nowhere"), 404)


def test_body_over_the_limit_is_413(tiny_server):
    huge = '{"model": "tiny", "messages": [{"role": "user", "content": "' + "x" * (9 << 20) + '"}]}'
    _assert_error(_post(tiny_server, "/v1/chat/completions", huge), 413)

    def chunked():  # no Content-Length: the limit must hold for streamed bodies too
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"y" * (1 << 20)
        yield b'"}'

    response = httpx.post(f"{tiny_server.url}/v1/completions", content=chunked(), timeout=60)
    _assert_error(response, 413)
    _still_works(tiny_server)


def test_tokenize_errors(tiny_server):
    _assert_error(httpx.post(f"{tiny_server.url}/tokenize", json={}), 400)
    _assert_error(httpx.post(f"{tiny_server.url}/tokenize", json={"prompt": "a", "messages": OK_MESSAGES}), 400)
    _assert_error(httpx.post(f"{tiny_server.url}/detokenize", json={"tokens": [10**9]}), 400)
    _assert_error(httpx.post(f"{tiny_server.url}/detokenize", json={"tokens": "abc"}), 400)


@pytest.fixture(scope="module")
def keyed_server(tiny_model):
    return shared_server(*tiny_server_args(tiny_model), "--api-key", "s3cret")


def test_api_key(keyed_server):
    for key in ("wrong", "s3cret-but-longer"):
        with pytest.raises(openai.AuthenticationError):
            keyed_server.client(api_key=key).models.list()
    response = httpx.post(f"{keyed_server.url}/v1/chat/completions", json={"messages": OK_MESSAGES})
    _assert_error(response, 401)
    assert keyed_server.client(api_key="s3cret").models.list().data[0].id == "tiny"
    assert httpx.get(f"{keyed_server.url}/health").status_code == 200  # open without the key
    assert httpx.get(f"{keyed_server.url}/").status_code == 200
    assert httpx.get(f"{keyed_server.url}/metrics").status_code == 401


@pytest.fixture(scope="module")
def one_slot_server(tiny_model):
    return shared_server(*tiny_server_args(tiny_model), "--max-num-seqs", "1", "--max-queue", "1")


def test_full_queue_is_429_with_retry_after(one_slot_server):
    client = one_slot_server.client()

    def ask(_: int) -> str:
        try:
            client.completions.create(model="tiny", prompt="Hello", max_tokens=48, extra_body={"ignore_eos": True})
            return "ok"
        except openai.RateLimitError as exc:
            assert exc.response.headers["retry-after"].isdigit()
            assert exc.body["type"] == "rate_limit_error"
            return "429"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(ask, range(8)))
    assert "429" in outcomes and "ok" in outcomes, outcomes
    _still_works(one_slot_server)
