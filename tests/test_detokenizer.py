"""Incremental detokenization joins to decode(all ids) and never emits a broken character."""

import pytest

from lucid.tokenizer import Tokenizer
from lucid.tokenizer.tiny import tiny_tokenizer

pytestmark = pytest.mark.timeout(30)

TEXTS = [
    "Hello, world! def add(a, b):\n    return a + b\n",
    "你好，世界！详细介绍下你自己。",
    "emoji 😀👍🏽 🇨🇳 👨‍👩‍👧 mixed 中文 and English 123",
    '<|im_start|>assistant\n我是<tool_call>{"name": "f"}</tool_call><|im_end|>',
    "",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return tiny_tokenizer()


def stream(tok: Tokenizer, ids: list[int], skip_special_tokens: bool = True) -> list[str]:
    detok = tok.detokenizer(skip_special_tokens=skip_special_tokens)
    return [detok.add(i) for i in ids] + [detok.flush()]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("skip", [True, False])
def test_stream_joins_to_decode_without_broken_characters(tok: Tokenizer, text: str, skip: bool) -> None:
    ids = tok.encode(text)
    pieces = stream(tok, ids, skip)
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip)
    assert not any("\ufffd" in p for p in pieces)


def test_partial_character_is_held_back(tok: Tokenizer) -> None:
    ids = tok.encode("😀!")
    assert len(ids) == 5  # four byte tokens and '!'
    assert stream(tok, ids) == ["", "", "", "😀", "!", ""]


def test_incomplete_tail_comes_out_on_flush_like_decode(tok: Tokenizer) -> None:
    ids = tok.encode("ab😀")[:-1]  # cut the emoji's last byte off
    pieces = stream(tok, ids)
    assert pieces[-1] == "\ufffd"
    assert "".join(pieces) == tok.decode(ids)


def test_invalid_bytes_in_the_middle_match_decode(tok: Tokenizer) -> None:
    emoji = tok.encode("😀")
    ids = [emoji[0], *tok.encode("ok"), emoji[0], emoji[1]]
    assert "".join(stream(tok, ids)) == tok.decode(ids)


def test_special_token_between_bytes_of_a_character(tok: Tokenizer) -> None:
    # Skipping the special token lets the two halves meet, exactly as decode() joins them.
    emoji = tok.encode("😀")
    im_end = tok.encode("<|im_end|>")
    ids = emoji[:2] + im_end + emoji[2:]
    for skip in (True, False):
        assert "".join(stream(tok, ids, skip)) == tok.decode(ids, skip_special_tokens=skip)


def test_detokenizers_are_independent(tok: Tokenizer) -> None:
    a, b = tok.detokenizer(prompt_ids=tok.encode("prompt")), tok.detokenizer()
    first, second = tok.encode("😀"), tok.encode("🎉")
    assert a.add(first[0]) == "" and b.add(second[0]) == ""
    assert "".join(a.add(i) for i in first[1:]) == "😀"
    assert "".join(b.add(i) for i in second[1:]) == "🎉"
