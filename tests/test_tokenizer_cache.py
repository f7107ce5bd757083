"""The built-tokenizer cache (lucid.tokenizer.gguf_cache): a GGUF's tokenizer is built from its fields once, then
read back from tokenizer.json, and behaves exactly as the one built from the fields."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
import torch

from lucid.loader import gguf_checkpoint as gguf_checkpoint_module
from lucid.loader import read_checkpoint
from lucid.testing import TinyModel
from lucid.tokenizer import Tokenizer, gguf_cache

pytestmark = pytest.mark.timeout(120)

SAMPLES = ["hello 你好 😀", "<|im_start|>user\nhi<|im_end|>\n", "def f(x):\n    return x  # done\n", "  \t\n\n"]


@pytest.fixture
def gguf_copy(tiny_model: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_cache, "_built", {})  # this test's own process-wide memory
    path = tmp_path / "model.gguf"
    shutil.copy(tiny_model.gguf_path, path)
    return path


def _forbid_building(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("the tokenizer was built from the GGUF's fields although it is cached")

    monkeypatch.setattr(gguf_checkpoint_module, "tokenizer_from_fields", fail)


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


def test_the_second_process_reads_the_built_tokenizer(gguf_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True).tokenizer
    entry = gguf_cache.tokenizer_entry(gguf_copy)
    assert (entry / "tokenizer.json").is_file() and (entry / "tokenizer_config.json").is_file()

    monkeypatch.setattr(gguf_cache, "_built", {})  # as a new process would start
    _forbid_building(monkeypatch)
    second = read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True).tokenizer
    assert second is not first
    assert_same_tokenizer(first, second)
    assert second.source == str(gguf_copy)  # errors name the model, not the cache folder


def test_one_process_builds_it_once(gguf_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True).tokenizer
    _forbid_building(monkeypatch)
    assert read_checkpoint(gguf_copy, torch.float32, use_cache=True).tokenizer is first


def test_small_files_are_not_cached(gguf_copy: Path) -> None:
    read_checkpoint(gguf_copy, torch.bfloat16, use_cache=False)
    assert not gguf_cache.tokenizer_entry(gguf_copy).exists() and gguf_cache.cached_tokenizer(gguf_copy) is None


def test_a_damaged_entry_is_rebuilt(gguf_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True).tokenizer
    tokenizer_json = gguf_cache.tokenizer_entry(gguf_copy) / "tokenizer.json"
    tokenizer_json.write_text("{not json")
    monkeypatch.setattr(gguf_cache, "_built", {})
    again = read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True).tokenizer
    assert_same_tokenizer(reference, again)


def test_a_changed_file_replaces_its_old_entry(gguf_copy: Path) -> None:
    read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True)
    old = gguf_cache.tokenizer_entry(gguf_copy)
    stat = gguf_copy.stat()
    os.utime(gguf_copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True)
    new = gguf_cache.tokenizer_entry(gguf_copy)
    assert new != old and new.is_dir() and not old.exists()


@pytest.mark.slow
def test_the_real_tokenizer_reads_back_identical(real_gguf_path: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
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
