"""A GGUF's tokenizer written as Hugging Face files (`Tokenizer.save_hf`, what `lucid convert` writes) reads back
as the same tokenizer, BOS rule included; and `encode_text` (special markers kept as text) is safe beside `encode`
from many threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from lucid.loader import gguf_checkpoint as gguf_checkpoint_module
from lucid.testing import TinyModel
from lucid.tokenizer import Tokenizer

pytestmark = pytest.mark.timeout(120)

SAMPLES = ["hello 你好 😀", "<|im_start|>user\nhi<|im_end|>\n", "def f(x):\n    return x  # done\n", "  \t\n\n"]


def assert_same_tokenizer(a: Tokenizer, b: Tokenizer) -> None:
    for text in SAMPLES:
        assert a.encode(text) == b.encode(text), text
        assert a.encode_text(text) == b.encode_text(text), text
        assert a.encode_prompt(text) == b.encode_prompt(text), text
    ids = a.encode(SAMPLES[0] + SAMPLES[1])
    assert a.decode(ids) == b.decode(ids) and a.decode(ids, False) == b.decode(ids, False)
    assert (a.bos_token_id, a.eos_token_id, a.pad_token_id) == (b.bos_token_id, b.eos_token_id, b.pad_token_id)
    assert a.eos_token_ids == b.eos_token_ids and a.special_token_ids == b.special_token_ids
    assert (a.vocab_size, a.adds_bos, a.chat_template) == (b.vocab_size, b.adds_bos, b.chat_template)
    assert [a.token_bytes(i) for i in range(a.vocab_size)] == [b.token_bytes(i) for i in range(b.vocab_size)]


@pytest.mark.slow
def test_the_real_tokenizer_reads_back_identical(real_gguf_path: Path, tmp_path: Path) -> None:
    from lucid.loader.gguf_file import read_gguf

    built = gguf_checkpoint_module.tokenizer_from_fields(read_gguf(real_gguf_path, torch.bfloat16), "real")
    built.save_hf(tmp_path / "entry")
    read_back = Tokenizer.from_hf_folder(tmp_path / "entry")
    assert_same_tokenizer(built, read_back)
    fim = "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n<|fim_middle|>"
    assert built.encode(fim) == read_back.encode(fim) and built.encode_text(fim) == read_back.encode_text(fim)


def test_encode_text_and_encode_from_many_threads(tiny_model: TinyModel) -> None:
    """encode_text flips the backend's special-token switch for one call: a concurrent encode never sees it."""
    tokenizer = Tokenizer.from_hf_folder(tiny_model.hf_dir)
    text = "<|im_start|>user\nhi<|im_end|>"
    special, plain = tokenizer.encode(text), tokenizer.encode_text(text)
    assert special != plain and len(plain) > len(special)
    wrong: list[str] = []

    def hammer(encode: object, expected: list[int]) -> None:
        for _ in range(300):
            if encode(text) != expected:  # type: ignore[operator]
                wrong.append(getattr(encode, "__name__", "?"))

    threads = [threading.Thread(target=hammer, args=(f, e))
               for f, e in [(tokenizer.encode, special), (tokenizer.encode_text, plain)] * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_a_tokenizer_that_adds_bos_still_does_after_the_round_trip(tiny_model: TinyModel, tmp_path: Path) -> None:
    """Gemma's and Llama's GGUFs ask for a BOS (tokenizer.ggml.add_bos_token): the cached copy must say so too."""
    from lucid.loader.gguf_file import read_gguf

    fields = dict(read_gguf(tiny_model.gguf_path, torch.float32).tokenizer_fields)
    fields["tokenizer.ggml.add_bos_token"] = True
    fields["tokenizer.ggml.bos_token_id"] = fields["tokenizer.ggml.eos_token_id"]
    built = Tokenizer.from_gguf_fields(fields, source="tiny")
    built.save_hf(tmp_path / "entry")
    read_back = Tokenizer.from_hf_folder(tmp_path / "entry")
    assert built.adds_bos and read_back.adds_bos
    assert read_back.encode_prompt("hi")[0] == built.bos_token_id
    assert_same_tokenizer(built, read_back)


def test_a_tokenizer_pickles(tiny_model: TinyModel) -> None:
    """Ray sends the replicas' tokenizer to the front pickled (lucid.cluster)."""
    import pickle

    tokenizer = Tokenizer.from_hf_folder(tiny_model.hf_dir)
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert_same_tokenizer(tokenizer, copy)
