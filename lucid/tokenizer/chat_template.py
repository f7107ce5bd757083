"""Render Hugging Face chat templates (jinja2) the way `transformers`' apply_chat_template does, sandboxed.

Templates come with model files, so they are untrusted code: they run in jinja2's immutable sandbox, which
refuses attribute tricks (`__class__`, ...) and in-place mutation of the caller's data.
"""

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """The chat template cannot render these messages (bad template, or the template rejected the input)."""


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}`: HF marks assistant text with it for training masks; here it is a
    plain block that renders its body, so templates that use it still work."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> NoReturn:
    # Templates call this to reject input (e.g. roles out of order); the message is meant for the user.
    raise ChatTemplateError(f"chat template rejected the messages: {message}")


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # HF's version: unlike jinja's built-in it keeps non-ASCII text and does not HTML-escape '<', '>', '&', "'".
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    # Compiling costs milliseconds; a server renders the same template for every request.
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template has a syntax error (line {e.lineno}): {e.message}") from e


def render_chat_template(
    template: str | None,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    special_tokens: dict[str, str] | None = None,
    **kwargs: Any,
) -> str:
    """Render `messages` to the prompt text. Any failure is a `ChatTemplateError` (a ValueError) with a clear message.

    `special_tokens` (bos_token, eos_token, ...) and `kwargs` become template variables, as in HF.
    """
    if not template:
        raise ChatTemplateError("this model has no chat template (a base model?); send a plain-text prompt to "
                                "/v1/completions instead")
    compiled = _compile(template)
    variables = {**(special_tokens or {}), **kwargs}
    try:
        return compiled.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt, **variables)
    except ChatTemplateError:
        raise
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"chat template failed: {e}") from e
    except Exception as e:
        # Any other failure inside a template (str + None, a missing key...) means the input did not fit it.
        raise ChatTemplateError(f"chat template failed on these messages: {type(e).__name__}: {e}") from e
