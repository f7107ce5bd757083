"""Tools and structured output on Ollama's API, through the engine's existing ones.

- `format` on /api/generate and /api/chat: "json" (any JSON object, Ollama's JSON mode) or a JSON schema, as the
  engine's output constraint (the same grammar `response_format` gives on the OpenAI endpoints).
- `tools` on /api/chat: OpenAI-style function tools, given to the chat template; the model's <tool_call> markup is
  parsed out of the answer (lucid.structured.tool_parser) and returned as Ollama's `message.tool_calls`, whose
  `arguments` is an object, not OpenAI's JSON string. Streamed, each call goes out in its own chunk as soon as its
  closing tag arrives, as Ollama sends them; the text around the calls streams as content.
"""

from __future__ import annotations

import json
from typing import Any

from lucid.server.errors import APIError
from lucid.server.tools import MAX_TOOLS, normalize_tool
from lucid.structured.spec import GrammarSpec, StructuredOutputError
from lucid.structured.tool_parser import HermesToolParser, ParsedCall


def format_spec(value: Any) -> GrammarSpec | None:
    """Ollama's `format` as an output constraint: None for no format."""
    if value is None or value == "":
        return None
    try:
        if value == "json":
            return GrammarSpec.json_object(param="format")
        if isinstance(value, dict):
            return GrammarSpec.json_schema(value, param="format")
    except StructuredOutputError as exc:
        raise APIError(400, f"invalid format: {exc}") from None
    raise APIError(400, f'invalid format: expected "json" or a JSON schema object, got {json.dumps(value)[:80]}')


def chat_tools(raw: list[Any] | None) -> list[dict[str, Any]]:
    """The request's tools as the template and the parser take them ([] for none); a malformed one is a 400."""
    if not raw:
        return []
    if len(raw) > MAX_TOOLS:
        raise APIError(400, f"tools: at most {MAX_TOOLS} functions, got {len(raw)}")
    tools = [normalize_tool(tool, f"tools[{i}]") for i, tool in enumerate(raw)]
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise APIError(400, "tools: function names must be unique")
    return tools


def ollama_call(call: ParsedCall) -> dict[str, Any] | None:
    """One parsed call in Ollama's shape; None when its arguments are not a JSON object (a cut-off call)."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        return None
    return {"function": {"name": call.name, "arguments": arguments}} if isinstance(arguments, dict) else None


def _written_back(call: ParsedCall) -> str:
    """A call that could not be returned as one, as the text the model wrote, so that nothing is lost."""
    return f'<tool_call>\n{{"name": {json.dumps(call.name)}, "arguments": {call.arguments}}}\n</tool_call>'


def tool_message(text: str, tool_names: set[str]) -> dict[str, Any]:
    """The assistant message of a whole answer: content outside the calls, and `tool_calls` when there are any
    (the stream's parser, fed the answer at once)."""
    content, calls = ToolCallStream(tool_names).feed(text, finished=True)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return message


class ToolCallStream:
    """One streamed answer: feed it each text delta; it returns the content to send now and the calls completed."""

    def __init__(self, tool_names: set[str]) -> None:
        self._parser = HermesToolParser(tool_names)
        self._calls: list[ParsedCall] = []   # every call begun so far, its arguments as they arrive
        self._sent = 0                       # calls already handed out

    def feed(self, text: str, finished: bool) -> tuple[str, list[dict[str, Any]]]:
        events = self._parser.feed(text) if text else []
        if finished:
            events += self._parser.finish()
        content = []
        for event in events:
            if event.kind == "content":
                content.append(event.text)
            elif event.kind == "call":
                self._calls.append(ParsedCall(event.name, ""))
            else:
                self._calls[event.index].arguments += event.text
        # A call is complete once the parser has closed it (or the answer ended).
        done = len(self._calls) if finished else min(self._parser.num_calls, len(self._calls))
        calls = []
        for call in self._calls[self._sent:done]:
            shaped = ollama_call(call)
            if shaped is None:
                content.append(_written_back(call))
            else:
                calls.append(shaped)
        self._sent = max(self._sent, done)
        return "".join(content), calls
