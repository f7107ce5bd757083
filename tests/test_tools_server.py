"""Tools and structured output through `lucid serve` on the tiny random model: whatever a random model would write,
the grammar makes it a valid call, which the parser turns into OpenAI's tool_calls (whole and streamed). And every
malformed tool, schema, regex or grammar is a 400 that leaves the server working."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from test_server_support import shared_server, tiny_server_args

pytestmark = pytest.mark.timeout(300)

PICK = {"type": "function", "function": {"name": "pick_color", "parameters": {
    "type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}, "bright": {"type": "boolean"}},
    "required": ["color", "bright"], "additionalProperties": False}}}
COUNT = {"type": "function", "function": {"name": "count", "parameters": {
    "type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["n"],
    "additionalProperties": False}}}
HI = [{"role": "user", "content": "def main():"}]


@pytest.fixture(scope="module")
def server(tiny_model):
    return shared_server(*tiny_server_args(tiny_model))


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def _chat(client, **kw):
    return client.chat.completions.create(**{"model": "tiny", "messages": HI, "max_tokens": 60, **kw})


def test_required_gives_valid_calls_whole_and_streamed_alike(client):
    for seed in range(3):
        # One call: with parallel calls a random model goes on calling until max_tokens.
        # The tiny vocabulary spells the tags out letter by letter: room for ~70 tokens of call.
        request = {"tools": [PICK, COUNT], "tool_choice": "required", "parallel_tool_calls": False,
                   "temperature": 1.0, "seed": seed, "max_tokens": 160}
        choice = _chat(client, **request).choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        calls = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]
        assert calls and all(name in ("pick_color", "count") for name, _ in calls)
        streamed: dict[int, list[str]] = {}
        finish = None
        for chunk in _chat(client, stream=True, **request):
            delta = chunk.choices[0].delta
            assert not delta.content
            for d in delta.tool_calls or []:
                streamed.setdefault(d.index, [d.function.name, ""])[1] += d.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
        assert finish == "tool_calls"
        assert [(n, json.loads(a)) for n, a in streamed.values()] == calls


def test_named_function_without_parallel_calls_gives_exactly_that_call(client):
    choice = _chat(client, tools=[PICK, COUNT], parallel_tool_calls=False, temperature=1.0, seed=5,
                   tool_choice={"type": "function", "function": {"name": "count"}}).choices[0]
    [call] = choice.message.tool_calls
    assert call.function.name == "count" and 0 <= json.loads(call.function.arguments)["n"] <= 9


def test_response_format_and_structured_outputs_on_both_endpoints(client):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    text = _chat(client, response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
                 ).choices[0].message.content
    assert isinstance(json.loads(text)["ok"], bool)
    text = client.completions.create(model="tiny", prompt="x", max_tokens=20, temperature=1.0,
                                     extra_body={"structured_outputs": {"regex": "[0-9]{3}"}}).choices[0].text
    assert len(text) == 3 and text.isdigit()
    text = client.completions.create(model="tiny", prompt="x", max_tokens=20,
                                     extra_body={"guided_choice": ["alpha", "beta"]}).choices[0].text
    assert text in ("alpha", "beta")


@pytest.mark.parametrize("body, words", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strnig"}}}},
     "strnig"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"if": {"type": "object"}}}}}, "if"),
    ({"response_format": {"type": "yaml"}}, "yaml"),
    ({"structured_outputs": {"regex": "(unclosed"}}, "unclosed"),
    ({"structured_outputs": {"grammar": "root ::= nowhere"}}, "nowhere"),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "exactly one"),
    ({"tools": [PICK], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "name"),
    ({"tools": [PICK], "tool_choice": "always"}, "tool_choice"),
    ({"tool_choice": "required"}, "at least one tool"),
    ({"tools": [PICK], "tool_choice": "required", "response_format": {"type": "json_object"}}, "one output"),
])
def test_bad_input_is_a_400_naming_the_problem(server, client, body, words):
    response = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                          json={"model": "tiny", "messages": HI, "max_tokens": 4, **body})
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["message"]
    assert _chat(client, max_tokens=2).choices[0].message is not None   # and the server goes on


def test_tool_history_renders_back(client):
    """An assistant turn with tool_calls (arguments as a JSON string) and a tool turn are accepted."""
    messages = [*HI, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "count", "arguments": '{"n": 3}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3"}]
    assert client.chat.completions.create(model="tiny", messages=messages, max_tokens=2, tools=[COUNT]).choices


def test_openai_client_raises_bad_request_for_bad_schema(client):
    with pytest.raises(openai.BadRequestError):
        _chat(client, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": []}})


def test_none_never_lets_the_model_open_a_call_even_when_pushed_to(client, tiny_model):
    """A logit_bias pushes "{" (a bare call's first character): without tools the answer opens with it; with
    tool_choice "none" the grammar refuses it whatever the bias, and "auto" stays free (it opens with "{" too)."""
    from lucid.tokenizer import Tokenizer

    [brace] = Tokenizer.from_hf_folder(tiny_model.hf_dir).encode("{")
    pushed = {"temperature": 0, "max_tokens": 6, "logit_bias": {str(brace): 100}}
    assert _chat(client, **pushed).choices[0].message.content.startswith("{")
    auto = _chat(client, tools=[COUNT], tool_choice="auto", **pushed).choices[0]
    assert auto.message.content.startswith("{") and not auto.message.tool_calls
    for stream in (False, True):
        if stream:
            chunks = list(_chat(client, tools=[COUNT], tool_choice="none", stream=True, **pushed))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
        else:
            choice = _chat(client, tools=[COUNT], tool_choice="none", **pushed).choices[0]
            assert not choice.message.tool_calls and choice.finish_reason == "length"
            text = choice.message.content
        assert text and not text.lstrip().startswith("{"), text
