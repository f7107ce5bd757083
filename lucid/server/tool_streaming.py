"""Tool calls in chat answers: the model's text -> OpenAI's `message.tool_calls`, and, while streaming, the parser's
events -> OpenAI's deltas (a call's first delta carries index, id, type and name; later ones arguments fragments)."""

from __future__ import annotations

import uuid
from typing import Any

from lucid.structured.tool_parser import HermesToolParser, ToolEvent, parse_tool_calls


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def tool_message(text: str, tool_names: set[str], parallel: bool = True) -> tuple[dict[str, Any], bool]:
    """The assistant message for a whole answer, and whether it holds calls."""
    content, calls = parse_tool_calls(text, tool_names)
    if not parallel:
        calls = calls[:1]
    tool_calls = [{"id": new_call_id(), "type": "function",
                   "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
    return {"role": "assistant", "content": content, "tool_calls": tool_calls}, bool(tool_calls)


class ToolCallDeltas:
    """One streamed choice: feed it each text delta, get the `delta` objects to send (possibly none)."""

    def __init__(self, tool_names: set[str], parallel: bool = True) -> None:
        self._parser = HermesToolParser(tool_names)
        self._parallel = parallel
        self.num_calls = 0

    def feed(self, text: str, finished: bool) -> list[dict[str, Any]]:
        events = self._parser.feed(text) if text else []
        if finished:
            events += self._parser.finish()
        return [d for d in (self._delta(e) for e in events) if d is not None]

    def _delta(self, event: ToolEvent) -> dict[str, Any] | None:
        if event.kind == "content":
            return {"content": event.text}
        if not self._parallel and event.index > 0:
            return None   # parallel_tool_calls false: the first call only
        if event.kind == "call":
            self.num_calls += 1
            return {"tool_calls": [{"index": event.index, "id": new_call_id(), "type": "function",
                                    "function": {"name": event.name, "arguments": ""}}]}
        return {"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]}
