"""The grammars of tool_choice in Qwen2.5's Hermes form. A forced call ("required" or a named function):
<tool_call>, a JSON object {"name": one of the tools, "arguments": valid against that tool's parameters},
</tool_call>; one call, or several when parallel calls are allowed. No call ("none"): any answer but one in a
form the Hermes parser would read as a call."""

from __future__ import annotations

import json
from typing import Any

from lucid.structured.backend import JSON_OPTIONS
from lucid.structured.spec import MAX_SPEC_CHARS, GrammarSpec, StructuredOutputError
from lucid.structured.tool_parser import CLOSE, OPEN


def call_schema(name: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
    return {"type": "object",
            "properties": {"name": {"const": name}, "arguments": parameters or {"type": "object"}},
            "required": ["name", "arguments"], "additionalProperties": False}


def tags_are_tokens(tokenizer: Any) -> bool:
    """Whether the vocabulary has <tool_call> and </tool_call> as tokens of their own (Qwen2.5 does). The grammar
    engine treats such added tokens as special: the grammar must name them as tokens, not spell them as text."""
    added = {t.content for t in tokenizer._backend.get_added_tokens_decoder().values()}
    return OPEN in added and CLOSE in added


def tool_call_grammar(functions: list[dict[str, Any]], parallel: bool, tag_tokens: bool,
                      param: str = "tools") -> GrammarSpec:
    """`functions`: OpenAI function objects ({"name", "parameters"}) the call may pick from; `tag_tokens`: see
    tags_are_tokens."""
    options = [call_schema(f["name"], f.get("parameters")) for f in functions]
    schema = {"x-guidance": JSON_OPTIONS, **(options[0] if len(options) == 1 else {"anyOf": options})}
    newline = json.dumps("\n")
    if tag_tokens:   # Lark's token syntax: <tool_call> is the token, "<tool_call>" would be its text
        call = f"{OPEN} {newline} %json {json.dumps(schema)} {newline} {CLOSE}"
    else:
        call = f"{json.dumps(OPEN + chr(10))} %json {json.dumps(schema)} {json.dumps(chr(10) + CLOSE)}"
    start = 'call ("\\n" call)*' if parallel else "call"
    source = f"start: {start}\ncall: {call}\n"
    if len(source) > MAX_SPEC_CHARS:
        raise StructuredOutputError(f"{param}: the tools' schemas are too large ({len(source)} characters)",
                                    param=param)
    return GrammarSpec("lark", source, param)


def no_call_grammar(tag_tokens: bool) -> GrammarSpec:
    """tool_choice "none" with tools: the model may write anything except a call in either form
    lucid.structured.tool_parser reads as one (and small models write): the <tool_call> tag, and an answer that
    opens with a bare JSON object (or one in a ```json fence). Where the tag is a token of its own the grammar
    never allows it (llguidance allows no special token a grammar does not name); where it is text, the text is
    excluded. A JSON answer in "none" mode is what response_format is for."""
    excluded = r"\s*(\{|```(json)?\s*\{)(?s:.*)"
    if not tag_tokens:
        excluded += "|(?s:.*)" + OPEN + "(?s:.*)"
    return GrammarSpec("lark", f"start: TEXT\nTEXT: /(?s:.*)/ & ~/{excluded}/\n", "tool_choice")
