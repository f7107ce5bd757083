"""lucid.server.ollama_tools without a server: `format` as a constraint, tools validated, and the model's
<tool_call> markup as Ollama's tool_calls, whole and fed a character at a time."""

from __future__ import annotations

import json

import pytest

from lucid.server.errors import APIError
from lucid.server.ollama_tools import ToolCallStream, chat_tools, format_spec, tool_message

pytestmark = pytest.mark.timeout(30)

NAMES = {"get_weather", "get_time"}
ANSWER = ('Let me look.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}\n'
          '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"timezone": "CET"}}\n</tool_call>')
CALLS = [{"function": {"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}},
         {"function": {"name": "get_time", "arguments": {"timezone": "CET"}}}]


def test_format_json_and_schema_become_constraints():
    assert format_spec(None) is None and format_spec("") is None
    assert json.loads(format_spec("json").source) == {"type": "object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    spec = format_spec(schema)
    assert json.loads(spec.source) == schema and spec.param == "format"


@pytest.mark.parametrize("bad", ["yaml", 5, ["json"], True])
def test_other_formats_are_400(bad):
    with pytest.raises(APIError) as err:
        format_spec(bad)
    assert err.value.status == 400 and "invalid format" in err.value.message


def test_tools_are_validated():
    tools = chat_tools([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert tools[0]["function"]["name"] == "f" and chat_tools(None) == []
    for bad in ([{"type": "function", "function": {}}], [{"type": "retrieval"}], ["f"],
                [{"type": "function", "function": {"name": "f"}}] * 2):
        with pytest.raises(APIError) as err:
            chat_tools(bad)
        assert err.value.status == 400


def test_a_whole_answer_becomes_content_and_tool_calls():
    message = tool_message(ANSWER, NAMES)
    assert message == {"role": "assistant", "content": "Let me look.", "tool_calls": CALLS}
    assert tool_message("Just text.", NAMES) == {"role": "assistant", "content": "Just text."}


def test_streamed_a_character_at_a_time_each_call_leaves_once_when_it_closes():
    stream = ToolCallStream(NAMES)
    content, calls, calls_at = "", [], []
    for i, ch in enumerate(ANSWER):
        text, done = stream.feed(ch, finished=False)
        content += text
        calls += done
        calls_at += [i] * len(done)
    text, done = stream.feed("", finished=True)
    assert content + text == "Let me look." and calls + done == CALLS
    first_close = ANSWER.index("</tool_call>") + len("</tool_call>") - 1
    assert calls_at[0] == first_close  # not held until the end of the answer


def test_a_cut_off_call_is_kept_as_text_not_lost():
    cut = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par'
    message = tool_message(cut, NAMES)
    assert "tool_calls" not in message and "get_weather" in message["content"] and "Par" in message["content"]
    stream = ToolCallStream(NAMES)
    text, calls = stream.feed(cut, finished=False)
    rest, more = stream.feed("", finished=True)
    assert not calls and not more and "Par" in text + rest
