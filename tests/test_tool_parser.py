"""The Hermes (Qwen2.5) tool-call parser on adversarial text: every split of the stream gives the same calls."""

from __future__ import annotations

import json
import random

import pytest

from lucid.structured.tool_parser import HermesToolParser, parse_tool_calls


def stream(text: str, cuts: list[int]) -> tuple[str | None, list[tuple[str, str]]]:
    """Feed `text` split at `cuts`; reassemble content and calls from the events as a client would."""
    parser = HermesToolParser()
    events = []
    start = 0
    for cut in [*cuts, len(text)]:
        events += parser.feed(text[start:cut])
        start = cut
    events += parser.finish()
    content = "".join(e.text for e in events if e.kind == "content") or None
    calls: list[list[str]] = []
    for e in events:
        if e.kind == "call":
            assert e.index == len(calls)
            calls.append([e.name, ""])
        elif e.kind == "arguments":
            calls[e.index][1] += e.text
    return content, [(n, a or "{}") for n, a in calls]


def whole(text: str) -> tuple[str | None, list[tuple[str, str]]]:
    content, calls = parse_tool_calls(text)
    return content, [(c.name, c.arguments) for c in calls]


def every_split_agrees(text: str) -> tuple[str | None, list[tuple[str, str]]]:
    expected = whole(text)
    for cut in range(len(text) + 1):                       # every single split point
        assert stream(text, [cut]) == expected, cut
    rng = random.Random(0)
    for _ in range(30):                                    # and many random multi-splits (1-char pieces too)
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text), rng.randint(2, 12))))
        assert stream(text, cuts) == expected, cuts
    assert stream(text, list(range(len(text)))) == expected   # one character at a time
    return expected


WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'


def test_plain_call():
    content, calls = every_split_agrees(f"<tool_call>\n{WEATHER}\n</tool_call>")
    assert content is None
    assert calls == [("get_weather", '{"city": "Paris", "unit": "celsius"}')]


def test_text_before_and_after_and_two_calls_back_to_back():
    text = (f"Let me check both.\n<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n"
            '{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}\n</tool_call>\nDone.')
    content, calls = every_split_agrees(text)
    assert content == "Let me check both.\nDone."   # the space between the calls and the text stays one break
    assert [n for n, _ in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[1][1]) == {"tz": "Europe/Paris"}


def test_strings_holding_the_closing_tag_braces_and_escapes():
    args = {"code": 'print("</tool_call>") {nested: [1, {"x": "}"}]} \\" <tool_call>', "n": [1, {"a": "]"}]}
    text = "<tool_call>\n" + json.dumps({"name": "run", "arguments": args}) + "\n</tool_call>"
    content, calls = every_split_agrees(text)
    assert content is None
    assert calls[0][0] == "run" and json.loads(calls[0][1]) == args


def test_arguments_before_name_and_arguments_as_a_string():
    text = ('<tool_call>{"arguments": {"q": "a}b"}, "name": "search"}</tool_call>'
            '<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>')
    _, calls = every_split_agrees(text)
    assert calls == [("search", '{"q": "a}b"}'), ("f", '{"x": 1}')]


def test_unclosed_tag_and_call_cut_short():
    # A complete object without its closing tag (the model stopped at <|im_end|>) is still a call.
    _, calls = every_split_agrees(f"<tool_call>\n{WEATHER}")
    assert calls == [("get_weather", '{"city": "Paris", "unit": "celsius"}')]
    # Cut inside the arguments (max_tokens): the call and what was written of its arguments.
    _, calls = every_split_agrees('<tool_call>\n{"name": "f", "arguments": {"a": "xy')
    assert calls == [("f", '{"a": "xy')]


@pytest.mark.parametrize("text", [
    "I would use <tool_call> here, but no.",             # the tag followed by prose
    "<tool_call>\n[1, 2]\n</tool_call>",                  # not an object
    '<tool_call>{"function": "f"}</tool_call>',          # an object without a name
    "a < b and <tool_ca",                                # a partial tag at the end
    "<tool_call>",                                       # a bare tag
])
def test_what_is_not_a_call_stays_content(text):
    content, calls = every_split_agrees(text)
    assert calls == []
    assert content is not None and "<tool_" in content


def test_whitespace_only_content_is_none_and_text_is_kept_verbatim():
    assert whole("\n\n  \n") == (None, [])
    assert every_split_agrees("Hello,\n  world  ") == ("Hello,\n  world", [])


NAMES = {"get_weather", "get_time"}


def every_split_agrees_with(names: set[str], text: str):
    expected = parse_tool_calls(text, names)
    expected = (expected[0], [(c.name, c.arguments) for c in expected[1]])
    for cut in range(len(text) + 1):
        parser = HermesToolParser(names)
        events = parser.feed(text[:cut]) + parser.feed(text[cut:]) + parser.finish()
        content = "".join(e.text for e in events if e.kind == "content") or None
        calls: list[list[str]] = []
        for e in events:
            if e.kind == "call":
                calls.append([e.name, ""])
            elif e.kind == "arguments":
                calls[e.index][1] += e.text
        assert (content, [(n, a or "{}") for n, a in calls]) == expected, cut
    return expected


def test_bare_call_objects_of_small_models_are_calls():
    """Qwen2.5-Coder-0.5B answers with the call object alone, or in a ```json fence, one per line when several."""
    _, calls = every_split_agrees_with(NAMES, "  " + WEATHER)
    assert calls == [("get_weather", '{"city": "Paris", "unit": "celsius"}')]
    _, calls = every_split_agrees_with(NAMES, "```json\n" + WEATHER + "\n```")
    assert calls == [("get_weather", '{"city": "Paris", "unit": "celsius"}')]
    two = WEATHER + '\n{"name": "get_time", "arguments": {"tz": "UTC"}}'
    content, calls = every_split_agrees_with(NAMES, two)
    assert content is None and [n for n, _ in calls] == ["get_weather", "get_time"]


@pytest.mark.parametrize("text", [
    '{"name": "Ada", "arguments": {"x": 1}}',                   # not one of the tools: a JSON answer
    '{"city": "Paris"}',                                        # no name at all
    'The call would be {"name": "get_weather", "arguments": {}}',  # not at the start: prose
    "```python\nprint(1)\n```",                                 # another code block
])
def test_bare_objects_that_are_not_calls_stay_content(text):
    content, calls = every_split_agrees_with(NAMES, text)
    assert calls == [] and content == text


def test_without_tool_names_bare_objects_are_never_calls():
    assert whole(WEATHER) == (WEATHER, [])
