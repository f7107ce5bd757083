"""The chat page shows tool calls (name + pretty arguments) and JSON answers pretty-printed. The page's request is
given tools / a response_format on its way to the real tiny server (the page itself sends neither), whose grammar
makes even a random model answer with a valid call or valid JSON."""

from __future__ import annotations

import json

import pytest
from test_chat_page import browser, page, send, server, settings, wait_answer  # noqa: F401 - shared fixtures

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

PICK = {"type": "function", "function": {"name": "pick_color", "parameters": {
    "type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}, "bright": {"type": "boolean"}},
    "required": ["color", "bright"], "additionalProperties": False}}}


def add_to_request(page, extra: dict) -> None:  # noqa: F811 - `page` is the fixture's object here
    def handle(route):
        body = json.loads(route.request.post_data or "{}")
        route.continue_(post_data=json.dumps({**body, **extra}))

    page.route("**/v1/chat/completions", handle)


def test_tool_call_shows_name_and_pretty_arguments(page):  # noqa: F811
    add_to_request(page, {"tools": [PICK], "tool_choice": "required", "parallel_tool_calls": False})
    settings(page, temperature="1", max_tokens="60")
    send(page, "Pick a color")
    wait_answer(page)
    call = page.locator(".msg[data-role=assistant] .tool-call").first
    assert "pick_color" in call.locator(".tool-call-name").text_content()
    args = call.locator(".tool-call-args").text_content()
    assert json.loads(args)["color"] in ("red", "green", "blue")
    assert args.startswith("{\n  ")                     # pretty-printed, one key a line
    assert "<tool_call>" not in page.locator(".msg[data-role=assistant] .md").text_content()


def test_json_answer_is_pretty_printed(page):  # noqa: F811
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
                                                                                "maximum": 9}},
              "required": ["ok", "n"], "additionalProperties": False}
    add_to_request(page, {"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}})
    settings(page, temperature="1", max_tokens="40")
    send(page, "Answer in JSON")
    wait_answer(page)
    shown = page.locator(".msg[data-role=assistant] .json-answer").text_content()
    assert set(json.loads(shown)) == {"ok", "n"} and "\n  " in shown
