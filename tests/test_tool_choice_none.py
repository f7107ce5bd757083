"""tool_choice "none": the grammar that keeps the model from calling refuses every form the Hermes parser reads as a
call and nothing else (checked on the tiny model's real byte-level vocabulary, where the tags are plain text)."""

from __future__ import annotations

import pytest

from lucid.structured.backend import GrammarCompiler
from lucid.structured.tool_grammar import no_call_grammar
from lucid.tokenizer import Tokenizer

pytestmark = pytest.mark.timeout(120)

CALLS = ['{"name": "get_weather", "arguments": {"city": "Paris"}}',
         '  \n{"name": "get_weather"',
         '```json\n{"name": "get_weather"}\n```',
         "Let me check. <tool_call>\n{\"name\": \"get_weather\"}"]
ANSWERS = ["It is 31 degrees and stormy in Paris.",
           "",
           "Here is the code:\n```python\nprint({'a': 1})\n```",
           "The tool said {\"temperature_c\": 31}.",
           "Use the <tool_response> you got."]


@pytest.fixture(scope="module")
def tokenizer(tiny_model) -> Tokenizer:
    return Tokenizer.from_hf_folder(tiny_model.hf_dir)


def _accepts(compiler: GrammarCompiler, tokenizer: Tokenizer, text: str, tag_tokens: bool) -> bool:
    matcher = compiler.new_matcher(no_call_grammar(tag_tokens))
    ids = tokenizer.encode(text)
    return matcher.validate_tokens(ids) == len(ids) and matcher.try_consume_tokens(ids) == len(ids) \
        and matcher.is_accepting()


def test_no_call_grammar_refuses_calls_and_allows_answers(tokenizer):
    compiler = GrammarCompiler(tokenizer, tokenizer.vocab_size)
    for text in CALLS:
        assert not _accepts(compiler, tokenizer, text, tag_tokens=False), text
    for text in ANSWERS:
        assert _accepts(compiler, tokenizer, text, tag_tokens=False), text
    # With the tags as tokens of their own the grammar bans the token (no text rule needed): text spelling the
    # tag letter by letter is then ordinary text.
    assert _accepts(compiler, tokenizer, "a <tool_call> b", tag_tokens=True)
    assert not _accepts(compiler, tokenizer, CALLS[0], tag_tokens=True)
