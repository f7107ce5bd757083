"""Ollama's API and llama.cpp's endpoints on a real `lucid serve` (tiny random model, which has no FIM tokens),
driven by the official `ollama` client and by plain HTTP: shapes, streaming, and errors shaped as each API does."""

from __future__ import annotations

import json

import httpx
import ollama
import pytest
from test_server_support import TINY_MAX_MODEL_LEN, TINY_NAMES, shared_server, tiny_server_args

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny_server(tiny_model):
    return shared_server(*tiny_server_args(tiny_model))


@pytest.fixture(scope="module")
def client(tiny_server) -> ollama.Client:
    return ollama.Client(host=tiny_server.url, timeout=120)


def test_tags_show_ps_version(client):
    names = [m.model for m in client.list().models]
    assert names == [f"{n}:latest" for n in TINY_NAMES]
    shown = client.show(f"{TINY_NAMES[0]}:latest")
    assert shown.details.family == "qwen2" and shown.capabilities == ["completion"]  # no FIM tokens: no insert
    assert shown.modelinfo["general.architecture"] == "qwen2" and "<|im_start|>" in shown.template
    [loaded] = client.ps().models
    assert loaded.context_length == TINY_MAX_MODEL_LEN and loaded.model == f"{TINY_NAMES[0]}:latest"
    assert client._client.get("/api/version").json()["version"]


def test_chat_non_streamed_counts_in_nanoseconds(client):
    result = client.chat(model=TINY_NAMES[1], messages=[{"role": "user", "content": "Hello!"}], stream=False,
                         options={"num_predict": 6, "temperature": 0})
    assert result.done and result.done_reason in ("stop", "length") and result.message.role == "assistant"
    assert 1 <= result.eval_count <= 6 and result.prompt_eval_count > 5
    assert result.total_duration >= result.eval_duration > 0 and result.prompt_eval_duration > 1000


def test_chat_streamed_equals_non_streamed_greedy(client):
    kwargs = {"model": TINY_NAMES[0], "messages": [{"role": "user", "content": "Tell me a story."}],
              "options": {"num_predict": 12, "temperature": 0}}
    whole = client.chat(**kwargs, stream=False).message.content
    parts = list(client.chat(**kwargs, stream=True))
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole
    assert parts[-1].eval_count == parts[-1].eval_count and parts[-1].done_reason


def test_generate_streams_ndjson_by_default(tiny_server):
    with httpx.stream("POST", f"{tiny_server.url}/api/generate", timeout=60,
                      json={"model": TINY_NAMES[0], "prompt": "Hi", "options": {"num_predict": 4}}) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[-1]["done"] is True and all(not line["done"] for line in lines[:-1])
    assert isinstance(lines[-1]["context"], list) and lines[-1]["eval_count"] <= 4


def test_generate_raw_and_system(client, tiny_server):
    text = "<|im_start|>user\nHi<|im_end|>\n"
    raw = client.generate(model=TINY_NAMES[0], prompt=text, raw=True, options={"num_predict": 3})
    count = httpx.post(f"{tiny_server.url}/tokenize", json={"prompt": text}, timeout=30).json()["count"]
    assert raw.prompt_eval_count == count < len(text) and raw.context is None  # markers recognised; no context
    templated = client.generate(model=TINY_NAMES[0], prompt="Hi", system="Be brief.", options={"num_predict": 3})
    assert templated.prompt_eval_count > raw.prompt_eval_count
    loaded = client.generate(model=TINY_NAMES[0], prompt="")
    assert loaded.done and loaded.done_reason == "load"


@pytest.mark.parametrize("call, status, text", [
    (lambda c: c.generate(model="nope", prompt="x"), 404, "model 'nope' not found"),
    (lambda c: c.generate(model=TINY_NAMES[0], prompt="x", suffix="y"), 400, "does not support insert"),
    (lambda c: c.generate(model=TINY_NAMES[0], prompt="x", images=[b"\x89PNG"]), 400, "does not support images"),
    (lambda c: c.generate(model=TINY_NAMES[0], prompt="x", raw=True, system="s"), 400, "raw mode"),
    (lambda c: c.generate(model=TINY_NAMES[0], prompt="x", format={"type": "strnig"}), 400, "format"),
    (lambda c: c.chat(model=TINY_NAMES[0], messages=[{"role": "user", "content": "x"}],
                      options={"temperature": "hot"}), 400, "temperature"),
    (lambda c: c.chat(model=TINY_NAMES[0], messages=[{"role": "user", "content": "x"}],
                      tools=[{"type": "function", "function": {"description": "no name"}}]), 400, "name"),
    (lambda c: c.pull("qwen2.5-coder"), 404, "does not implement"),
])
def test_errors_are_ollama_shaped(client, call, status, text):
    with pytest.raises(ollama.ResponseError) as err:
        call(client)
    assert err.value.status_code == status and isinstance(err.value.error, str) and text in err.value.error


def test_format_constrains_the_answer_to_the_schema(client):
    """Ollama's `format` (a JSON schema or "json"): even a random model's answer is valid JSON of that shape."""
    schema = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"],
              "additionalProperties": False}
    for stream in (False, True):
        if stream:
            parts = list(client.generate(model=TINY_NAMES[0], prompt="A color?", format=schema, stream=True,
                                         options={"num_predict": 40, "temperature": 0}))
            text, last = "".join(p.response for p in parts), parts[-1]
        else:
            last = client.generate(model=TINY_NAMES[0], prompt="A color?", format=schema,
                                   options={"num_predict": 40, "temperature": 0})
            text = last.response
        assert last.done_reason == "stop" and json.loads(text)["color"] in ("red", "green", "blue")
    answer = client.chat(model=TINY_NAMES[0], messages=[{"role": "user", "content": "JSON please"}], format="json",
                         options={"num_predict": 24, "temperature": 0, "seed": 1})
    assert answer.message.content.lstrip().startswith("{")


def test_bad_bodies_are_400_not_500(tiny_server):
    cases = [(path, body) for path in ("/api/generate", "/api/chat")
             for body in (b"{not json", b"[1, 2]", json.dumps({"model": ""}).encode(),
                          json.dumps({"model": TINY_NAMES[0], "options": [1]}).encode())]
    cases += [("/api/chat", json.dumps({"model": TINY_NAMES[0], "messages": "x"}).encode()),
              ("/api/chat", json.dumps({"model": TINY_NAMES[0], "messages": [{"content": "no role"}]}).encode()),
              ("/api/generate", json.dumps({"model": TINY_NAMES[0], "prompt": 5}).encode()),
              ("/api/generate", json.dumps({"model": TINY_NAMES[0], "prompt": "x", "context": [-1]}).encode())]
    for path, body in cases:
        response = httpx.post(f"{tiny_server.url}{path}", content=body, timeout=30)
        assert response.status_code == 400 and isinstance(response.json()["error"], str), (path, body)


def test_fim_requests_on_a_model_without_fim_tokens_are_400(tiny_server):
    url = tiny_server.url
    for path, body in (("/infill", {"input_prefix": "def f(", "input_suffix": ")"}),
                       ("/v1/completions", {"prompt": "def f(", "suffix": ")"})):
        response = httpx.post(f"{url}{path}", json=body, timeout=30)
        assert response.status_code == 400, path
        assert "fill-in-the-middle tokens" in response.json()["error"]["message"]


def test_infill_validates_input_extra_before_the_model(tiny_server):
    response = httpx.post(f"{tiny_server.url}/infill", timeout=30,
                          json={"input_prefix": "", "input_suffix": "", "input_extra": [{"filename": "a"}]})
    assert response.status_code == 400 and '"text" field' in response.json()["error"]["message"]


def test_completion_native_endpoint(tiny_server):
    url = tiny_server.url
    many = httpx.post(f"{url}/completion", json={"prompt": "Hello", "n_predict": 4, "n_cmpl": 2}, timeout=60).json()
    assert [r["index"] for r in many] == [0, 1] and all(r["stop"] and r["tokens_predicted"] <= 4 for r in many)
    one = httpx.post(f"{url}/completion", json={"prompt": "Hello", "n_predict": 4, "temperature": 0}, timeout=60)
    body = one.json()
    assert isinstance(body, dict) and body["tokens_evaluated"] == 2 and body["timings"]["predicted_n"] <= 4
    with httpx.stream("POST", f"{url}/completion", json={"prompt": "Hello", "n_predict": 4, "temperature": 0,
                                                          "stream": True}, timeout=60) as response:
        frames = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert "".join(f["content"] for f in frames) == body["content"] and frames[-1]["stop"] is True
    warm = httpx.post(f"{url}/completion", json={"prompt": "Hello", "n_predict": 0}, timeout=60).json()
    assert warm["content"] == "" and warm["tokens_predicted"] == 0
    bad = httpx.post(f"{url}/completion", json={"prompt": "Hello", "n_cmpl": 5}, timeout=60)
    assert bad.status_code == 400 and "n_cmpl" in bad.json()["error"]["message"]
