"""The server's pure parts, without a model: request parsing, limits, logprob shapes, the gate, OpenAPI."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

from lucid.engine.outputs import TokenLogprob, TopLogprob
from lucid.server.app import build_app
from lucid.server.errors import APIError
from lucid.server.logprobs import LOGPROB_FLOOR, chat_logprobs, completion_logprobs, next_offset
from lucid.server.protocol import ChatCompletionRequest, CompletionRequest, parse_json, parse_model
from lucid.server.request_params import build_sampling_params, resolve_max_tokens
from lucid.server.state import ServerSettings, ServerState

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("raw", [b"NaN", b'{"a": Infinity}', b"[]", b"null", b"{", b"\xc3\x28"])
def test_parse_json_rejects(raw):
    with pytest.raises(APIError) as info:
        parse_json(raw)
    assert info.value.status == 400


def test_lone_surrogate_is_located():
    with pytest.raises(APIError) as info:
        parse_json(b'{"messages": [{"role": "user", "content": "\\udc00"}]}')
    assert info.value.param == "messages" and "messages.0.content" in info.value.message


def test_chat_messages_for_the_template():
    req = parse_model({"messages": [{"role": "developer", "content": "Be kind."},
                                    {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                 {"type": "text", "text": "b"}]},
                                    {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}],
                       "unknown": 1}, ChatCompletionRequest)
    assert [m.for_template() for m in req.messages] == [
        {"role": "system", "content": "Be kind."}, {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]


@pytest.mark.parametrize("body", [{"prompt": 5}, {"prompt": [1, "a"]}, {"prompt": "x", "echo": "yes"},
                                  {"prompt": "x", "max_tokens": 2.5}, {"prompt": "x", "stream": 1}])
def test_completion_request_types_are_strict(body):
    with pytest.raises(APIError) as info:
        parse_model(body, CompletionRequest)
    assert info.value.status == 400


def test_resolve_max_tokens():
    assert resolve_max_tokens(None, None, 100, 512) == 412  # chat: the rest of the context
    assert resolve_max_tokens(None, 16, 100, 512) == 16     # completions: 16
    assert resolve_max_tokens(None, 16, 500, 512) == 12     # ... clipped to the room left
    assert resolve_max_tokens(12, None, 500, 512) == 12
    with pytest.raises(APIError) as info:
        resolve_max_tokens(13, None, 500, 512)
    assert info.value.code == "context_length_exceeded" and "512" in info.value.message and "513" in info.value.message
    with pytest.raises(APIError):
        resolve_max_tokens(None, None, 512, 512)


def test_sampling_errors_name_the_request_field():
    req = parse_model({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 25, "logprobs": True},
                      ChatCompletionRequest)
    with pytest.raises(APIError) as info:
        build_sampling_params(req, max_tokens=4, logprobs=25, vocab_size=100, logprobs_param="top_logprobs")
    assert info.value.param == "top_logprobs" and info.value.message.startswith("top_logprobs:")


class _Bytes:
    def token_bytes(self, token_id: int) -> list[int]:
        return list(f"<{token_id}>".encode())


def test_logprob_shapes():
    items = [TokenLogprob(1, "Hel", -0.5, [TopLogprob(1, "Hel", -0.5), TopLogprob(2, "He", -1.0)]),
             TokenLogprob(3, "lo", -math.inf, [TopLogprob(4, "p", -0.1)])]
    chat = chat_logprobs(items, _Bytes(), top_k=1)["content"]
    assert chat[0] == {"token": "Hel", "logprob": -0.5, "bytes": list(b"<1>"),
                       "top_logprobs": [{"token": "Hel", "logprob": -0.5, "bytes": list(b"<1>")}]}
    assert chat[1]["logprob"] == LOGPROB_FLOOR  # JSON has no -inf
    legacy = completion_logprobs(items, top_k=1, text_offset=5)
    assert legacy["tokens"] == ["Hel", "lo"] and legacy["text_offset"] == [5, 8]
    assert legacy["top_logprobs"][1] == {"p": -0.1, "lo": LOGPROB_FLOOR}  # the chosen token is always there
    assert next_offset(legacy, 5) == 10


def _app(**settings) -> TestClient:
    state = ServerState(lambda: None, ServerSettings(**settings))  # never loads: no lifespan without `with`
    return TestClient(build_app(state))


def test_cors_only_when_asked():
    preflight = {"Origin": "http://example.com", "Access-Control-Request-Method": "POST"}
    off = _app().options("/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    on = _app(allowed_origins=["http://example.com"], api_key="k").options("/v1/chat/completions", headers=preflight)
    assert on.status_code == 200 and on.headers["access-control-allow-origin"] == "http://example.com"


def test_gate_order_key_then_availability():
    client = _app(api_key="k")
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer k"}).status_code == 503
    assert client.get("/health").status_code == 503  # loading, and open without the key


def test_openapi_documents_400_never_422():
    doc = _app().get("/openapi.json").json()
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            assert "422" not in operation["responses"], path
    assert "400" in doc["paths"]["/v1/completions"]["post"]["responses"]
    body = doc["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CompletionRequest"}


def test_serve_flags_reach_the_engine_config():
    import argparse

    from lucid.server.cli_serve import add_serve_arguments, engine_config_from_args

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    default = engine_config_from_args(parser.parse_args([]))
    assert not default.enforce_eager and default.enable_prefix_caching
    config = engine_config_from_args(parser.parse_args(["--enforce-eager", "--no-prefix-caching",
                                                        "--max-num-seqs", "4", "--threads", "3"]))
    assert config.enforce_eager and not config.enable_prefix_caching and config.max_num_seqs == 4
    assert config.num_threads == 3 and default.num_threads is None
