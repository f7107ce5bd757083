"""The grammar of a forced tool call (tool_choice "required" or a named function) in Qwen2.5's Hermes form:
<tool_call>, a JSON object {"name": one of the tools, "arguments": valid against that tool's parameters},
</tool_call>; one call, or several when parallel calls are allowed."""

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


def tool_call_grammar(functions: list[dict[str, Any]], parallel: bool, param: str = "tools") -> GrammarSpec:
    """`functions`: OpenAI function objects ({"name", "parameters"}) the call may pick from."""
    options = [call_schema(f["name"], f.get("parameters")) for f in functions]
    schema = {"x-guidance": JSON_OPTIONS, **(options[0] if len(options) == 1 else {"anyOf": options})}
    call = f"{json.dumps(OPEN + chr(10))} %json {json.dumps(schema)} {json.dumps(chr(10) + CLOSE)}"
    start = 'call ("\\n" call)*' if parallel else "call"
    source = f"start: {start}\ncall: {call}\n"
    if len(source) > MAX_SPEC_CHARS:
        raise StructuredOutputError(f"{param}: the tools' schemas are too large ({len(source)} characters)",
                                    param=param)
    return GrammarSpec("lark", source, param)
