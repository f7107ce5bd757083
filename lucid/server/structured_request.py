"""`response_format` (OpenAI) and `structured_outputs` (vLLM's extension; its older `guided_*` fields too) as the
engine's GrammarSpec; every malformed one is a 400 naming the field."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lucid.server.errors import bad_request
from lucid.structured.spec import GrammarSpec, StructuredOutputError

if TYPE_CHECKING:
    from lucid.engine.async_engine import AsyncEngine

STRUCTURED_KEYS = ("json", "regex", "choice", "grammar")


def response_format_spec(response_format: dict[str, Any] | None) -> GrammarSpec | None:
    if response_format is None:
        return None
    kind = response_format.get("type", "text")
    try:
        if kind == "text":
            return None
        if kind == "json_object":
            return GrammarSpec.json_object()
        if kind == "json_schema":
            body = response_format.get("json_schema")
            if not isinstance(body, dict) or "schema" not in body:
                raise bad_request("response_format: 'json_schema' needs an object with a 'schema'",
                                  param="response_format")
            return GrammarSpec.json_schema(body["schema"])
    except StructuredOutputError as exc:
        raise bad_request(str(exc), param=exc.param) from None
    raise bad_request(f"response_format type {kind!r} is not one of 'text', 'json_object', 'json_schema'",
                      param="response_format")


def structured_outputs_spec(structured: dict[str, Any] | None) -> GrammarSpec | None:
    """vLLM's {"json": schema} | {"regex": ...} | {"choice": [...]} | {"grammar": ...}: exactly one of them."""
    if structured is None:
        return None
    given = [k for k in STRUCTURED_KEYS if structured.get(k) is not None]
    if len(given) != 1:
        raise bad_request(f"structured_outputs: give exactly one of {', '.join(STRUCTURED_KEYS)}",
                          param="structured_outputs")
    key = given[0]
    value = structured[key]
    try:
        if key == "json":
            return GrammarSpec.json_schema(value, param="structured_outputs")
        if key == "regex":
            return GrammarSpec.regex(value)
        if key == "choice":
            return GrammarSpec.choice(value)
        return GrammarSpec.grammar(value)
    except StructuredOutputError as exc:
        raise bad_request(str(exc), param=exc.param) from None


def legacy_guided(body: Any) -> dict[str, Any] | None:
    """vLLM's older top-level guided_json / guided_regex / guided_choice / guided_grammar, as structured_outputs."""
    found = {k: getattr(body, f"guided_{k}", None) for k in STRUCTURED_KEYS}
    found = {k: v for k, v in found.items() if v is not None}
    return found or None


def pick_one(*specs: GrammarSpec | None) -> GrammarSpec | None:
    """At most one constraint per request: two would contradict each other."""
    given = [s for s in specs if s is not None]
    if len(given) > 1:
        raise bad_request(f"only one output constraint at a time; got {' and '.join(s.param for s in given)}",
                          param=given[1].param)
    return given[0] if given else None


async def compile_constraint(engine: AsyncEngine, spec: GrammarSpec | None) -> GrammarSpec | None:
    """Compile (or find cached) the grammar off the event loop, so a bad one is a 400 before anything is queued
    and a first compile never stalls other requests; the engine then finds it in its cache."""
    if spec is None:
        return None
    try:
        await engine.compile_grammar(spec)
    except StructuredOutputError as exc:
        raise bad_request(str(exc), param=exc.param) from None
    return spec
