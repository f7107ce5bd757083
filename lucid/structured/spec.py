"""What a request constrains its output to: plain data that SamplingParams carries (no grammar engine here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from lucid.errors import SamplingParamsError

GrammarKind = Literal["json", "regex", "choice", "grammar", "lark"]
MAX_SPEC_CHARS = 256 * 1024  # a schema or grammar larger than this is a mistake or an attack, not a use


class StructuredOutputError(SamplingParamsError):
    """The schema, regex or grammar cannot be used: the message is the grammar engine's (or says which keyword)."""


@dataclass(frozen=True)
class GrammarSpec:
    """One constraint, as text, so that equal constraints share one compiled grammar (a schema keeps its key order:
    properties are generated in the order the schema lists them).

    kind: "json" (source: a JSON schema as JSON text), "regex", "choice" (source: a JSON list of strings),
    "grammar" (EBNF/GBNF as llama.cpp writes it, or Lark) or "lark" (lucid's own tool-call grammars).
    `param` names the request field it came from, for error messages.
    """

    kind: GrammarKind
    source: str
    param: str = "response_format"

    @staticmethod
    def json_schema(schema: Any, param: str = "response_format") -> GrammarSpec:
        if isinstance(schema, bool):  # JSON Schema allows true (anything) and false (nothing)
            schema = {} if schema else {"not": {}}
        if not isinstance(schema, dict):
            raise StructuredOutputError(f"{param}: the JSON schema must be an object, got {type(schema).__name__}",
                                        param=param)
        return GrammarSpec("json", _bounded(json.dumps(schema, ensure_ascii=False), param), param)

    @staticmethod
    def json_object(param: str = "response_format") -> GrammarSpec:
        return GrammarSpec("json", '{"type": "object"}', param)

    @staticmethod
    def regex(pattern: str, param: str = "structured_outputs") -> GrammarSpec:
        return GrammarSpec("regex", _bounded(_text(pattern, param), param), param)

    @staticmethod
    def choice(options: Any, param: str = "structured_outputs") -> GrammarSpec:
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            raise StructuredOutputError(f"{param}: 'choice' must be a non-empty list of strings", param=param)
        return GrammarSpec("choice", _bounded(json.dumps(options, ensure_ascii=False), param), param)

    @staticmethod
    def grammar(text: str, param: str = "structured_outputs") -> GrammarSpec:
        return GrammarSpec("grammar", _bounded(_text(text, param), param), param)


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise StructuredOutputError(f"{param}: must be a non-empty string", param=param)
    return value


def _bounded(text: str, param: str) -> str:
    if len(text) > MAX_SPEC_CHARS:
        raise StructuredOutputError(f"{param}: at most {MAX_SPEC_CHARS} characters, got {len(text)}", param=param)
    return text
