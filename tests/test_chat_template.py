"""Chat template rendering: HF's environment (filters, globals, whitespace control), sandboxing, clear errors."""

import json
from datetime import datetime

import pytest

from lucid.tokenizer import ChatTemplateError, render_chat_template
from lucid.tokenizer.tiny import tiny_tokenizer

pytestmark = pytest.mark.timeout(30)

USER = [{"role": "user", "content": "hi"}]


def render(template: str, messages: list[dict] | None = None, **kwargs: object) -> str:
    return render_chat_template(template, USER if messages is None else messages, **kwargs)


def test_trim_and_lstrip_blocks() -> None:
    # Block tags on their own indented lines leave neither the newline nor the indentation behind.
    template = (
        "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}"
    )
    assert render(template, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) == "[a]\n[b]\n"


def test_tojson_keeps_unicode_and_does_not_html_escape() -> None:
    value = {"q": "详细 <b>&'"}
    assert render("{{ x | tojson }}", x=value) == json.dumps(value, ensure_ascii=False)
    assert render("{{ x | tojson(indent=2) }}", x={"a": 1}) == '{\n  "a": 1\n}'
    assert render("{{ x | tojson(ensure_ascii=True) }}", x="é") == '"\\u00e9"'


def test_tools_and_extra_kwargs_pass_through() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    template = "{% for t in tools %}{{ t.function.name }}|{% endfor %}{{ enable_thinking }}|{{ add_generation_prompt }}"
    assert render(template, tools=tools, enable_thinking=False) == "get_weather|False|True"
    assert render("{% if tools %}T{% else %}none{% endif %}") == "none"


def test_special_tokens_are_variables() -> None:
    special = {"bos_token": "<s>", "eos_token": "</s>"}
    assert render("{{ bos_token }}{{ eos_token }}", special_tokens=special) == "<s></s>"


def test_strftime_now() -> None:
    assert render("{{ strftime_now('%Y') }}") == str(datetime.now().year)


def test_generation_block_and_loop_controls() -> None:
    template = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{% generation %}<{{ m.content }}>{% endgeneration %}{% endfor %}"  # noqa: E501
    assert render(template, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) == "<a>"


def test_raise_exception_is_a_value_error_with_the_message() -> None:
    template = "{% if messages[0].role != 'system' %}{{ raise_exception('System message must come first') }}{% endif %}"
    with pytest.raises(ValueError, match="System message must come first"):
        render(template)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% for m in messages %}", "syntax error"),
        ("{{ messages[0].content + none_var.x }}", "chat template failed"),
        ("{{ messages[0].content + 1 }}", "chat template failed"),
        ("{% set _ = messages.append(1) %}", "chat template failed"),  # the sandbox forbids mutating input
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "chat template failed"),
    ],
)
def test_template_failures_are_chat_template_errors(template: str, message: str) -> None:
    with pytest.raises(ChatTemplateError, match=message):
        render(template)
    assert issubclass(ChatTemplateError, ValueError)  # the server turns ValueError into a 400


def test_missing_template_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no chat template"):
        render_chat_template(None, USER)
    tok = tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template(USER)


def test_none_content_is_a_clear_error() -> None:
    # ChatML concatenates content; a None content (OpenAI allows it for tool calls) must not crash the server.
    with pytest.raises(ChatTemplateError):
        tiny_tokenizer().apply_chat_template([{"role": "user", "content": None}])
