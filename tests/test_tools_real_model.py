"""Tool calling and structured output with the official openai client against `lucid serve` on the real model."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from test_server_support import shared_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "description": "The current time in a timezone",
                                              "parameters": {"type": "object",
                                                             "properties": {"timezone": {"type": "string"}},
                                                             "required": ["timezone"]}}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer", "minimum": 0,
                                                                         "maximum": 120},
                   "languages": {"type": "array", "items": {"enum": ["python", "rust", "go", "c"]},
                                 "maxItems": 3}},
    "required": ["name", "age", "languages"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server(real_gguf_path):
    return shared_server("--served-model-name", "Qwen2-0.5B-Instruct", "--max-model-len", "4096")


@pytest.fixture(scope="module")
def client(server):
    return server.client(api_key="0").with_options(timeout=900)   # a loaded 2-core CPU can be slow


def _call(client, **kw):
    return client.chat.completions.create(**{"model": "Qwen2-0.5B-Instruct", "temperature": 0, "max_tokens": 96,
                                             **kw})


def test_weather_question_calls_the_tool_with_valid_arguments(client):
    result = _call(client, messages=ASK_WEATHER, tools=[WEATHER_TOOL, TIME_TOOL])
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content                              # no markup leaks into content
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    assert "paris" in arguments["city"].lower()


AGENT_SYSTEM = {"role": "system", "content": "You are a helpful assistant. Use the tools when needed, then answer "
                                           "the user in plain sentences."}


def test_two_turn_loop_uses_the_tool_result(client):
    # An agent framework's loop: its system prompt, the call, the tool's result, the final answer.
    ask = [AGENT_SYSTEM, *ASK_WEATHER]
    first = _call(client, messages=ask, tools=[WEATHER_TOOL]).choices[0].message
    call = first.tool_calls[0]
    messages = [*ask,
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id,
                 "content": json.dumps({"city": "Paris", "temperature_c": 31, "sky": "thunderstorms"})}]
    # The final turn: tool_choice "none" asks for the answer. Left free ("auto") the 0.5B model calls get_weather
    # again; "none" leaves the tools out of the prompt and its grammar refuses every call form (tool_grammar.py).
    final = _call(client, messages=messages, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=80).choices[0]
    assert final.finish_reason == "stop" and not final.message.tool_calls
    text = final.message.content.lower()
    assert "31" in text and "thunder" in text, text
    assert "{" not in text and "paris" in text, f"not an answer in sentences: {text}"


def test_streamed_deltas_reassemble_to_the_non_streamed_call(client):
    request = {"messages": [{"role": "user", "content": "What's the weather in Tokyo and in Rome? Use the tool."}],
               "tools": [WEATHER_TOOL]}
    whole = _call(client, **request).choices[0].message
    calls: dict[int, dict] = {}
    content, finish = "", None
    for chunk in _call(client, stream=True, **request):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for d in delta.tool_calls or []:
            if d.index not in calls:   # the first delta of a call carries index, id, type and name
                assert d.id and d.type == "function" and d.function.name
                calls[d.index] = {"name": d.function.name, "arguments": ""}
            else:
                assert d.id is None and d.function.name is None
            calls[d.index]["arguments"] += d.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert "<tool_call>" not in content and "tool_call" not in content
    assert finish == "tool_calls"
    assert [calls[i] for i in sorted(calls)] == [{"name": c.function.name, "arguments": c.function.arguments}
                                                 for c in whole.tool_calls]
    assert len(calls) >= 1


def test_required_always_calls_even_when_no_tool_is_needed(client):
    result = _call(client, messages=[{"role": "user", "content": "Say hello to me in French."}],
                   tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required", parallel_tool_calls=False)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        tool = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_named_function_and_legacy_functions(client):
    named = _call(client, messages=ASK_WEATHER, tools=[WEATHER_TOOL, TIME_TOOL],
                  tool_choice={"type": "function", "function": {"name": "get_time"}}).choices[0].message
    assert [c.function.name for c in named.tool_calls] == ["get_time"]
    legacy = _call(client, messages=ASK_WEATHER, functions=[WEATHER_TOOL["function"]],
                   function_call={"name": "get_weather"}).choices[0]
    assert legacy.message.tool_calls[0].function.name == "get_weather"


def test_json_schema_output_validates_for_20_seeded_samples_at_temperature_1(client):
    texts = []
    for seed in (1, 2):
        result = client.chat.completions.create(
            model="Qwen2-0.5B-Instruct", temperature=1.0, seed=seed, n=10, max_tokens=100,
            messages=[{"role": "user", "content": "Invent a programmer and describe them."}],
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON,
                                                                    "strict": True}})
        texts += [c.message.content for c in result.choices]
    assert len(texts) == 20
    for text in texts:
        jsonschema.validate(json.loads(text), PERSON)


def test_json_object_and_vllm_structured_outputs(client, server):
    obj = _call(client, messages=[{"role": "user", "content": "Give me a JSON object about cats."}],
                response_format={"type": "json_object"}).choices[0].message.content
    assert isinstance(json.loads(obj), dict)
    choice = _call(client, messages=[{"role": "user", "content": "Is Python compiled or interpreted?"}],
                   extra_body={"structured_outputs": {"choice": ["compiled", "interpreted"]}})
    assert choice.choices[0].message.content in ("compiled", "interpreted")
    completion = client.completions.create(model="Qwen2-0.5B-Instruct", prompt="The date today is", max_tokens=16,
                                           temperature=0, extra_body={"structured_outputs": {
                                               "regex": r" \d{4}-\d{2}-\d{2}"}})
    text = completion.choices[0].text
    assert len(text) == 11 and text[5] == "-" and text[1:5].isdigit()


def test_invalid_schema_is_a_400_and_the_next_request_works(client):
    with pytest.raises(openai.BadRequestError) as bad:
        _call(client, messages=ASK_WEATHER, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
                "a": {"type": "strnig"}}}}})
    assert "strnig" in str(bad.value)
    with pytest.raises(openai.BadRequestError) as bad:
        _call(client, messages=ASK_WEATHER, extra_body={"structured_outputs": {"regex": "(unclosed"}})
    assert "regex" in str(bad.value)
    with pytest.raises(openai.BadRequestError):
        _call(client, messages=ASK_WEATHER, tools=[WEATHER_TOOL],
              tool_choice={"type": "function", "function": {"name": "nope"}})
    assert _call(client, messages=ASK_WEATHER, max_tokens=4).choices[0].message.content


# ---- the same on Ollama's API, with the official ollama client (agent frameworks built on Ollama) ----------------

@pytest.fixture(scope="module")
def ollama_client(server):
    import ollama

    return ollama.Client(host=server.url, timeout=900)


def test_ollama_chat_calls_the_tool_whole_and_streamed(ollama_client):
    request = {"model": "Qwen2-0.5B-Instruct", "messages": ASK_WEATHER, "tools": [WEATHER_TOOL, TIME_TOOL],
               "options": {"temperature": 0, "num_predict": 96}}
    whole = ollama_client.chat(**request)
    [call] = whole.message.tool_calls
    assert call.function.name == "get_weather" and "paris" in call.function.arguments["city"].lower()
    jsonschema.validate(dict(call.function.arguments), WEATHER_TOOL["function"]["parameters"])
    assert "tool_call" not in (whole.message.content or "") and whole.done_reason == "stop"
    parts = list(ollama_client.chat(**request, stream=True))
    assert [c for p in parts for c in p.message.tool_calls or []] == whole.message.tool_calls
    assert "".join(p.message.content or "" for p in parts) == (whole.message.content or "")
    assert "tools" in ollama_client.show("Qwen2-0.5B-Instruct").capabilities


def test_ollama_tool_result_turn(ollama_client):
    ask = [AGENT_SYSTEM, *ASK_WEATHER]
    first = ollama_client.chat(model="Qwen2-0.5B-Instruct", messages=ask, tools=[WEATHER_TOOL],
                               options={"temperature": 0, "num_predict": 96}).message
    assert first.tool_calls and first.tool_calls[0].function.name == "get_weather"
    messages = [*ask, first.model_dump(exclude_none=True),
                {"role": "tool", "tool_name": "get_weather",
                 "content": json.dumps({"city": "Paris", "temperature_c": 31, "sky": "thunderstorms"})}]
    # The final turn asks for the result as JSON of a given shape (`format`): it can only be right if the tool's
    # result reached the prompt. (Asked for sentences, the 0.5B model writes the call again; on the OpenAI API
    # tool_choice "none" forbids that, and Ollama's API has no tool_choice.)
    report = {"type": "object", "properties": {"temperature_c": {"type": "integer"}, "sky": {"type": "string"}},
              "required": ["temperature_c", "sky"], "additionalProperties": False}
    final = ollama_client.chat(model="Qwen2-0.5B-Instruct", messages=messages, format=report,
                               options={"temperature": 0, "num_predict": 40})
    answer = json.loads(final.message.content)
    assert answer["temperature_c"] == 31 and "thunder" in answer["sky"].lower(), answer


def test_ollama_format_schema_validates_for_seeded_samples(ollama_client):
    for seed in range(1, 6):
        result = ollama_client.chat(model="Qwen2-0.5B-Instruct", format=PERSON,
                                    messages=[{"role": "user", "content": "Invent a programmer and describe them."}],
                                    options={"temperature": 1.0, "seed": seed, "num_predict": 100})
        jsonschema.validate(json.loads(result.message.content), PERSON)
