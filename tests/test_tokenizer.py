"""Fast tokenizer tests on a tiny BPE trained on the fly (no real model needed)."""

import json
from pathlib import Path
from typing import Any

import pytest

from lucid.errors import ModelLoadError
from lucid.tokenizer import Tokenizer
from lucid.tokenizer.tiny import TINY_CHAT_TEMPLATE, tiny_gguf_fields

pytestmark = pytest.mark.timeout(60)

TRICKY = [
    "",
    "Hello, world!",
    "12345678 3.14159 1,000,000",
    "a  b   c\t\td\n\n\n  e   \n",
    "  leading and trailing  ",
    "I'm sure they've said WE'LL go",
    "你好，世界！详细介绍下你自己。",
    "emoji 😀👍🏽 🇨🇳 👨‍👩‍👧",
    "def f(x):\n    return x**2  # comment\n",
    "café naïve",
]

# The qwen2 split pattern as Qwen2's tokenizer.json spells it, kept here literally so that the HF-folder side of
# the agreement test does not borrow lucid's constant.
QWEN2_PATTERN_JSON = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)


def write_hf_folder_by_hand(fields: dict[str, Any], folder: Path, generation_eos: list[int] | None = None) -> None:
    """An HF folder for the same tokenizer, written the way Qwen2's own tokenizer.json is laid out."""
    tokens: list[str] = fields["tokenizer.ggml.tokens"]
    types: list[int] = fields["tokenizer.ggml.token_type"]
    added = [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": k == 3,
        }
        for i, (t, k) in enumerate(zip(tokens, types, strict=True))
        if k in (3, 4)
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN_JSON}, "behavior": "Isolated", "invert": False},
                byte_level,
            ],
        },
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {t: i for i, (t, k) in enumerate(zip(tokens, types, strict=True)) if k == 1},
            "merges": [m.split(" ") for m in fields["tokenizer.ggml.merges"]],
        },
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")
    config = {
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": {"content": "<|endoftext|>", "special": True},
        "chat_template": fields["tokenizer.chat_template"],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if generation_eos is not None:
        (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": generation_eos}))


@pytest.fixture(scope="module")
def fields() -> dict[str, Any]:
    return dict(tiny_gguf_fields())


@pytest.fixture(scope="module")
def tok(fields: dict[str, Any]) -> Tokenizer:
    return Tokenizer.from_gguf_fields(fields, "tiny.gguf")


def ids_of(tok: Tokenizer, *tokens: str) -> list[int]:
    return [tok.encode(t)[0] for t in tokens]


def test_gguf_fields_and_hf_folder_agree(fields: dict[str, Any], tok: Tokenizer, tmp_path: Path) -> None:
    write_hf_folder_by_hand(fields, tmp_path)
    hf = Tokenizer.from_hf_folder(tmp_path)
    assert hf.vocab_size == tok.vocab_size == len(fields["tokenizer.ggml.tokens"])
    assert hf.special_token_ids == tok.special_token_ids
    assert (hf.eos_token_id, hf.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert hf.eos_token_ids == tok.eos_token_ids
    assert hf.chat_template == tok.chat_template == TINY_CHAT_TEMPLATE
    for text in [*TRICKY, "<|im_start|>user\nhi<|im_end|>\n<tool_call>{}</tool_call>"]:
        ids = tok.encode(text)
        assert hf.encode(text) == ids, text
        assert hf.decode(ids) == tok.decode(ids)
        assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids, skip_special_tokens=False)


def test_ids_are_gguf_indices(fields: dict[str, Any], tok: Tokenizer) -> None:
    tokens = fields["tokenizer.ggml.tokens"]
    for i in (0, 100, len(tokens) - 1):
        assert tok.id_to_token(i) == tokens[i]
    assert tok.id_to_token(len(tokens) + 10) is None


@pytest.mark.parametrize("text", TRICKY)
def test_decode_inverts_encode(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    # The raw bytes of the tokens, joined, are exactly the text's UTF-8 (what logprobs `bytes` promise).
    assert b"".join(bytes(tok.token_bytes(i)) for i in ids) == text.encode("utf-8")


def test_special_tokens_in_text_become_their_ids(tok: Tokenizer) -> None:
    im_start, im_end, tool_call = ids_of(tok, "<|im_start|>", "<|im_end|>", "<tool_call>")
    assert len({im_start, im_end, tool_call}) == 3
    ids = tok.encode("<|im_start|>user\nhi<|im_end|><tool_call>")
    assert ids[0] == im_start and ids[-2:] == [im_end, tool_call]
    assert {im_start, im_end} <= tok.special_token_ids
    assert tool_call not in tok.special_token_ids  # user-defined: kept when decoding, as HF does
    assert tok.decode(ids) == "user\nhi<tool_call>"
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>user\nhi<|im_end|><tool_call>"


def test_eos_and_special_ids(fields: dict[str, Any], tok: Tokenizer) -> None:
    n = len(fields["tokenizer.ggml.tokens"])
    endoftext, im_start, im_end = n - 5, n - 4, n - 3
    assert tok.eos_token_id == im_end
    assert tok.bos_token_id == tok.pad_token_id == endoftext
    assert tok.eos_token_ids == [im_end, endoftext]
    assert tok.special_token_ids == {endoftext, im_start, im_end}


def test_generation_config_adds_eos_ids(fields: dict[str, Any], tmp_path: Path) -> None:
    write_hf_folder_by_hand(fields, tmp_path, generation_eos=[5, 7])
    tok = Tokenizer.from_hf_folder(tmp_path)
    assert tok.eos_token_ids[-2:] == [5, 7]
    assert tok.eos_token_ids[0] == tok.eos_token_id


def test_token_text_and_bytes_of_partial_character(tok: Tokenizer) -> None:
    # The tiny vocabulary has no token for the emoji, so it comes out as its four bytes, one token each.
    ids = tok.encode("😀")
    assert len(ids) == 4
    assert [tok.token_bytes(i) for i in ids] == [[b] for b in "😀".encode()]
    assert all(tok.token_text(i) == "\ufffd" for i in ids)
    assert tok.token_text(ids_of(tok, "<|im_end|>")[0]) == "<|im_end|>"
    assert tok.token_bytes(tok.vocab_size + 5) == [] and tok.token_text(tok.vocab_size + 5) == ""


def test_add_bos_token(fields: dict[str, Any]) -> None:
    with_bos = Tokenizer.from_gguf_fields({**fields, "tokenizer.ggml.add_bos_token": True}, "bos.gguf")
    bos = with_bos.bos_token_id
    assert with_bos.encode("hi", add_special_tokens=True) == [bos, *with_bos.encode("hi")]
    plain = Tokenizer.from_gguf_fields(fields, "plain.gguf")
    assert plain.encode("hi", add_special_tokens=True) == plain.encode("hi")


def test_save_hf_round_trip(tok: Tokenizer, tmp_path: Path) -> None:
    tok.save_hf(tmp_path)
    again = Tokenizer.from_hf_folder(tmp_path)
    assert again.vocab_size == tok.vocab_size
    assert (again.bos_token_id, again.eos_token_id, again.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert again.eos_token_ids == tok.eos_token_ids
    assert again.special_token_ids == tok.special_token_ids
    assert again.chat_template == tok.chat_template
    for text in TRICKY:
        assert again.encode(text) == tok.encode(text)


def test_save_hf_loads_in_transformers(tok: Tokenizer, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tok.save_hf(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf.eos_token == "<|im_end|>" and hf.pad_token == "<|endoftext|>"
    for text in [*TRICKY, "<|im_start|>user\nhi<|im_end|><tool_call>"]:
        ids = tok.encode(text)
        assert hf.encode(text, add_special_tokens=True) == ids, text
        assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids)
    messages = [{"role": "user", "content": "hi"}]
    rendered = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == tok.apply_chat_template(messages)


def test_chat_template_with_tiny_tokenizer(tok: Tokenizer) -> None:
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    no_prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=False)
    assert no_prompt == "<|im_start|>user\nhi<|im_end|>\n"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokenizer.ggml.model": "bert"}, "byte-level BPE"),
        ({"tokenizer.ggml.pre": "no-such-pre"}, "unsupported tokenizer.ggml.pre"),
        ({"tokenizer.ggml.tokens": []}, "no tokenizer.ggml.tokens"),
        ({"tokenizer.ggml.merges": ["nospace"]}, "malformed merge"),
    ],
)
def test_bad_gguf_fields_raise_clear_errors(fields: dict[str, Any], change: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        Tokenizer.from_gguf_fields({**fields, **change}, "bad.gguf")


def test_duplicate_tokens_rejected(fields: dict[str, Any]) -> None:
    tokens = list(fields["tokenizer.ggml.tokens"])
    tokens[1] = tokens[0]
    with pytest.raises(ModelLoadError, match="duplicate"):
        Tokenizer.from_gguf_fields({**fields, "tokenizer.ggml.tokens": tokens}, "dup.gguf")


def test_missing_tokenizer_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no tokenizer.json"):
        Tokenizer.from_hf_folder(tmp_path)


def test_chat_template_from_jinja_file_wins(fields: dict[str, Any], tmp_path: Path) -> None:
    write_hf_folder_by_hand(fields, tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}!", encoding="utf-8")
    tok = Tokenizer.from_hf_folder(tmp_path)
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == "x!"


def test_named_chat_templates_pick_default(fields: dict[str, Any], tmp_path: Path) -> None:
    write_hf_folder_by_hand(fields, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert Tokenizer.from_hf_folder(tmp_path).chat_template == "plain"
