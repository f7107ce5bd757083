"""Tool calls in model output, parsed as it streams: the Hermes form that Qwen2.5 is trained on,

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

`HermesToolParser.feed(text)` takes the detokenized text piece by piece (split anywhere, even inside a tag) and
returns events: content outside the calls, the start of a call (its name), fragments of its arguments. The
non-streamed answer is the same parser fed the whole text, so streamed fragments always reassemble to it.

The call's JSON is scanned character by character (strings and escapes tracked), so a `</tool_call>` or a brace
inside a string argument is just text. A `<tool_call>` not followed by a JSON object, or an object without a
string "name", is given back as content. Whitespace around the calls is not content.

Small models (Qwen2.5-Coder-0.5B among them) often leave the tags out and answer with the bare call object, or with
it in a ```json fence. An answer that *starts* with such an object (after a call, the next one too) is a call as
well, but only when its name is one of the request's tools: otherwise it is content, as any JSON answer is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

OPEN, CLOSE = "<tool_call>", "</tool_call>"
FENCES = ("```json\n", "```\n")   # a bare call in a Markdown code block
FENCE_CLOSE = "```"


@dataclass
class ToolEvent:
    kind: str            # "content" | "call" (a call starts: index, name) | "arguments" (a fragment: index, text)
    text: str = ""
    index: int = 0
    name: str = ""


@dataclass
class ParsedCall:
    name: str
    arguments: str       # a JSON text (the model's own, as written)


class _CallScanner:
    """The JSON object after one <tool_call>, scanned incrementally: its "name" and the span of "arguments"."""

    def __init__(self) -> None:
        self.text = ""
        self.pos = 0
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.invalid = False        # the text after the tag is not a JSON object
        self.closed_at = -1         # index just past the object's closing brace
        self.name: str | None = None
        self.args_start = -1        # first character of the "arguments" value
        self.args_end = -1          # just past it
        self.args_kind = ""         # "{", "[", '"' or "p" (a number, true, false, null)
        self._key: str | None = None
        self._expect = "open"       # at depth 1: "key", "colon", "value", "comma"
        self._value_start = -1

    def feed(self, text: str) -> None:
        self.text += text
        while self.pos < len(self.text) and self.closed_at < 0 and not self.invalid:
            self._step(self.text[self.pos])
            self.pos += 1

    def _step(self, ch: str) -> None:
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif ch == "\\":
                self.escaped = True
            elif ch == '"':
                self.in_string = False
                if self.depth == 1:
                    self._string_closed()
            return
        if self._expect == "open":
            if ch == "{":
                self.depth, self._expect = 1, "key"
            elif not ch.isspace():
                self.invalid = True
            return
        if self.depth == 1 and self._expect == "value" and not ch.isspace():
            self._value_start = self.pos
            if self._key == "arguments":
                self.args_start, self.args_kind = self.pos, ch if ch in '{["' else "p"
            self._expect = "in_value"
            if ch not in '{["':  # a number or a literal: it ends at the next ',' or '}' (checked below)
                return
        if ch == '"':
            self.in_string = True
        elif ch in "{[":
            self.depth += 1
        elif ch in "}]":
            self.depth -= 1
            if self.depth == 1:
                self._value_closed(self.pos + 1)
            elif self.depth == 0:
                self._primitive_closed(self.pos)
                self.closed_at = self.pos + 1
        elif ch == ":" and self.depth == 1 and self._expect == "colon":
            self._expect = "value"
        elif ch == "," and self.depth == 1:
            self._primitive_closed(self.pos)
            self._expect = "key"

    def _string_closed(self) -> None:
        if self._expect == "key":
            self._key, self._expect = self._decode(self._value_start_of_key(), self.pos + 1), "colon"
        elif self._expect == "in_value":
            self._value_closed(self.pos + 1)

    def _value_start_of_key(self) -> int:
        return self.text.rfind('"', 0, self.pos)  # the key's opening quote: keys hold no unescaped quote
        # (an escaped quote inside a key would fool this; such a key is never "name" or "arguments")

    def _value_closed(self, end: int) -> None:
        if self._expect != "in_value":
            return
        if self._key == "arguments":
            self.args_end = end
        elif self._key == "name" and self.text[self._value_start] == '"':
            name = self._decode(self._value_start, end)
            self.name = name if isinstance(name, str) else None
        self._expect = "comma"

    def _primitive_closed(self, end: int) -> None:
        if self._expect == "in_value" and self._key == "arguments" and self.args_kind == "p":
            self.args_end = end
            self._expect = "comma"

    def _decode(self, start: int, end: int) -> object:
        try:
            return json.loads(self.text[start:end])
        except ValueError:
            return None

    def arguments(self, upto: int | None = None) -> str:
        """The arguments' text so far (object or array values stream; others come whole once complete)."""
        if self.args_start < 0:
            return ""
        end = self.args_end if self.args_end >= 0 else (self.pos if upto is None else upto)
        raw = self.text[self.args_start:end].rstrip()
        if self.args_kind == '"':  # arguments written as a JSON string holding the JSON: unwrap it
            decoded = self._decode(self.args_start, self.args_end) if self.args_end >= 0 else None
            return decoded if isinstance(decoded, str) else ""
        if self.args_kind == "p" and self.args_end < 0:
            return ""
        return raw


class HermesToolParser:
    """Streaming parser of <tool_call> blocks. feed() and finish() return ToolEvents."""

    def __init__(self, tool_names: set[str] | None = None) -> None:
        self._names = tool_names            # a bare (untagged) call must name one of these
        self._buffer = ""                   # text-mode characters held back (a possible start of OPEN)
        self._pending_space = ""            # whitespace held until text follows it
        self._bare_ok = tool_names is not None  # nothing but whitespace (and calls) so far: a bare call may start
        self._call: _CallScanner | None = None
        self._opener = OPEN                 # the current call's opening text (given back if it is no call)
        self._closer = CLOSE                # what ends it ("" for a bare object)
        self._bare = False
        self._started = False               # the current call's "call" event was sent
        self._sent_args = 0                 # characters of its arguments sent
        self.num_calls = 0

    def feed(self, text: str) -> list[ToolEvent]:
        events: list[ToolEvent] = []
        self._buffer += text
        while self._buffer:
            if self._call is None:
                if not self._text_mode(events):
                    break
            elif not self._call_mode(events):
                break
        return events

    def finish(self) -> list[ToolEvent]:
        """The end of the output: a call cut short keeps what was sent; held-back text is content."""
        events: list[ToolEvent] = []
        if self._call is not None:
            if self._started or self._call.name is not None:
                self._start_and_stream(events)
                self._end_call()
            else:
                self._content(events, self._opener + self._call.text, final=True)
                self._call = None
        if self._buffer:
            self._content(events, self._buffer, final=True)
            self._buffer = ""
        return events

    # ---- text outside calls ----------------------------------------------------------------------------------
    def _text_mode(self, events: list[ToolEvent]) -> bool:
        if self._bare_ok:
            started = self._bare_start()
            if started is None:
                return False          # too little text yet to tell
            if started:
                return True
        at = self._buffer.find(OPEN)
        if at >= 0:
            self._content(events, self._buffer[:at])
            self._buffer = self._buffer[at + len(OPEN):]
            self._begin(OPEN, CLOSE, bare=False)
            return True
        keep = _partial_suffix(self._buffer, OPEN)
        self._content(events, self._buffer[:len(self._buffer) - keep])
        self._buffer = self._buffer[len(self._buffer) - keep:]
        return False

    def _bare_start(self) -> bool | None:
        """At a point where a bare call may start: True if one starts, False if not, None to wait for more."""
        head = self._buffer.lstrip()
        if not head:
            return None
        if head.startswith("{"):
            self._buffer = head
            self._begin("", "", bare=True)
            return True
        for fence in FENCES:
            if fence.startswith(head):
                return None
            if head.startswith(fence):
                rest = head[len(fence):].lstrip()
                if not rest:
                    return None
                if rest.startswith("{"):
                    self._buffer = rest
                    self._begin(head[:len(head) - len(rest)], FENCE_CLOSE, bare=True)
                    return True
        self._bare_ok = False
        return False

    def _begin(self, opener: str, closer: str, bare: bool) -> None:
        self._call, self._started, self._sent_args = _CallScanner(), False, 0
        self._opener, self._closer, self._bare = opener, closer, bare

    def _content(self, events: list[ToolEvent], text: str, final: bool = False) -> None:
        text = self._pending_space + text
        body = text.rstrip()
        self._pending_space = "" if final else text[len(body):]
        if body.strip():
            self._bare_ok = False
            if events and events[-1].kind == "content":
                events[-1].text += body
            else:
                events.append(ToolEvent("content", body))
        elif not final:
            self._pending_space = text

    # ---- inside a call ---------------------------------------------------------------------------------------
    def _call_mode(self, events: list[ToolEvent]) -> bool:
        call = self._call
        assert call is not None
        call.feed(self._buffer)
        self._buffer = ""
        if call.invalid:  # not a call after all: the tag is text, and what follows is scanned again as text
            self._call = None
            self._content(events, self._opener)
            self._buffer = call.text
            return True
        if call.name is not None and self._bare and not self._started and call.name not in (self._names or ()):
            self._call = None  # a JSON answer that is no call of ours: content, all of it
            self._content(events, self._opener + call.text)
            self._bare_ok = False
            return True
        if call.name is not None:
            self._start_and_stream(events)
        if call.closed_at < 0:
            return False
        rest = call.text[call.closed_at:]
        stripped = rest.lstrip()
        if self._closer and len(stripped) < len(self._closer) and self._closer.startswith(stripped):
            return False  # wait for the closing tag (or the end)
        if call.name is None:  # a JSON object, but not a call: content
            self._content(events, self._opener + call.text[:call.closed_at])
            self._call = None
            self._bare_ok = False
            self._buffer = rest
            return True
        self._end_call()
        closed = self._closer and stripped.startswith(self._closer)
        self._buffer = stripped[len(self._closer):] if closed else rest
        self._bare_ok = self._bare_ok or self._bare   # after a bare call, another may follow
        return True

    def _start_and_stream(self, events: list[ToolEvent]) -> None:
        call = self._call
        assert call is not None and call.name is not None
        index = self.num_calls
        if not self._started:
            self._pending_space = ""   # whitespace between text and a call is not content
            events.append(ToolEvent("call", index=index, name=call.name))
            self._started = True
        args = call.arguments()
        if len(args) > self._sent_args:
            events.append(ToolEvent("arguments", args[self._sent_args:], index=index))
            self._sent_args = len(args)

    def _end_call(self) -> None:
        self.num_calls += 1
        self._call = None


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `tag` (it may become the tag)."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


def parse_tool_calls(text: str, tool_names: set[str] | None = None) -> tuple[str | None, list[ParsedCall]]:
    """A whole answer -> (content outside the calls or None, the calls). The streaming parser, fed at once."""
    parser = HermesToolParser(tool_names)
    events = parser.feed(text) + parser.finish()
    content = "".join(e.text for e in events if e.kind == "content")
    calls: list[ParsedCall] = []
    for e in events:
        if e.kind == "call":
            calls.append(ParsedCall(e.name, ""))
        elif e.kind == "arguments":
            calls[e.index].arguments += e.text
    for call in calls:
        call.arguments = call.arguments or "{}"
    return content or None, calls
