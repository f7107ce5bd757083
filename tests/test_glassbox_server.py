"""The glass box over HTTP (tiny random model): /glassbox/token, /glassbox/fork, /glassbox/engine, /engine, and
the offline /docs."""

from __future__ import annotations

import json

import httpx
import pytest
from test_server_support import shared_server, tiny_server_args

pytestmark = pytest.mark.timeout(180)

HELLO = [{"role": "user", "content": "Hello, how are you today?"}]


@pytest.fixture(scope="module")
def server(tiny_model):
    return shared_server(*tiny_server_args(tiny_model))


def chat(server, max_tokens: int = 8) -> dict:
    return httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
        "messages": HELLO, "temperature": 0, "max_tokens": max_tokens, "logprobs": True, "top_logprobs": 5}).json()


def test_token_lens_matches_the_answers_logprobs(server):
    answer = chat(server)
    content = answer["choices"][0]["logprobs"]["content"]
    completion = [item["bytes"] for item in content]
    for index in (0, len(content) - 1):
        got = httpx.post(f"{server.url}/glassbox/token", timeout=60, json={
            "messages": HELLO, "completion": completion[:index + 1]}).json()
        lens = got["lens"]
        assert len(lens["rows"]) == 3 and lens["rows"][0]["label"] == "embedding"   # tiny: 2 layers
        last = lens["rows"][-1]
        assert last["prob"] == pytest.approx(2.718281828 ** content[index]["logprob"], abs=1e-3)
        assert last["rank"] == 1 and last["top"][0]["token_id"] == got["token_ids"][-1]  # greedy
        att = got["attention"]
        assert att["position"] == len(got["token_ids"]) - 2
        for layer in att["layers"]:
            assert sum(layer["mean"]) == pytest.approx(1.0, abs=1e-3) and min(layer["mean"]) >= 0
            assert len(layer["heads"]) == 4 and len(layer["mean"]) == att["position"] + 1
        assert got["reused_tokens"] > 0   # the answer's prefix was still in the prefix cache


def test_token_ids_form_and_bad_input(server):
    ids = httpx.post(f"{server.url}/tokenize", json={"prompt": "one two three"}).json()["tokens"]
    got = httpx.post(f"{server.url}/glassbox/token", timeout=60, json={"token_ids": ids}).json()
    assert got["token_ids"] == ids and got["lens"]["token_id"] == ids[-1]
    for body in ({}, {"token_ids": [1]}, {"token_ids": [1, 10 ** 9]}, {"token_ids": [-(2 ** 64), 2]},
                 {"token_ids": [-1, 2]}, {"messages": HELLO, "completion": [[300]]},
                 {"messages": HELLO, "token_ids": [1, 2]}, {"token_ids": [1, 2], "top": 0}):
        reply = httpx.post(f"{server.url}/glassbox/token", timeout=60, json=body)
        assert reply.status_code == 400 and reply.json()["error"]["message"], (body, reply.text)


def test_fork_at_temperature_zero_equals_a_fresh_request(server):
    answer = chat(server, 6)
    content = answer["choices"][0]["logprobs"]["content"]
    # A runner-up at the third token (one the tokenizer can spell: the tiny model's padded rows have no bytes).
    alternative = next(t for t in content[2]["top_logprobs"][1:] if t["bytes"])
    completion = [item["bytes"] for item in content[:2]] + [alternative["bytes"]]
    frames = []
    with httpx.stream("POST", f"{server.url}/glassbox/fork", timeout=60, json={
            "messages": HELLO, "completion": completion, "max_tokens": 5, "temperature": 0}) as reply:
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                frames.append(json.loads(line[6:]))
    head = frames[0]["fork"]
    assert head["reused_tokens"] > 0 and head["reused_tokens"] + head["computed_tokens"] == head["prompt_tokens"]
    text = "".join(f["choices"][0]["delta"].get("content", "") for f in frames[1:])
    tokens = [t for f in frames[1:] for t in f["choices"][0]["logprobs"]["content"]]
    assert len(tokens) == 5 and all("bytes" in t for t in tokens)
    # The same prefix as a plain completion request (token ids) gives the same greedy continuation.
    prefix = httpx.post(f"{server.url}/glassbox/token", timeout=60, json={
        "messages": HELLO, "completion": completion}).json()["token_ids"]
    fresh = httpx.post(f"{server.url}/v1/completions", timeout=60, json={
        "prompt": prefix, "max_tokens": 5, "temperature": 0}).json()
    assert text == fresh["choices"][0]["text"]


def test_engine_view_polls_steps_and_the_pool(server):
    first = httpx.get(f"{server.url}/glassbox/engine").json()   # starts the recording
    chat(server, 4)
    view = httpx.get(f"{server.url}/glassbox/engine", params={"after": first["last"]}).json()
    assert view["steps"] and all(s["id"] > first["last"] for s in view["steps"])
    kinds = {i["kind"] for s in view["steps"] for i in s["items"]}
    assert kinds == {"prefill", "decode"}
    assert view["pool"]["used"] == [] and view["pool"]["num_free"] == view["pool"]["num_blocks"]
    assert httpx.get(f"{server.url}/engine").headers["content-type"].startswith("text/html")


def test_docs_are_served_offline(server):
    page = httpx.get(f"{server.url}/docs").text
    assert "cdn" not in page.lower() and "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert httpx.get(f"{server.url}/static/vendor/swagger-ui/{asset}").status_code == 200
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert "/glassbox/token" in doc["paths"] and "TokenRequest" in doc["components"]["schemas"]
