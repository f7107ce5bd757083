"""early_tokenizer: the API front's copy of the model's tokenizer, built without torch, is the one read_checkpoint
gives, or None when it cannot be had cheaply; it never raises."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lucid.loader import gguf_checkpoint as gguf_checkpoint_module
from lucid.loader import read_checkpoint
from lucid.loader.cache import prepared_entry
from lucid.loader.early_tokenizer import early_tokenizer
from lucid.testing import TinyModel
from lucid.tokenizer import Tokenizer

pytestmark = pytest.mark.timeout(120)

TEXTS = ["hello 你好 😀", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>x  \n\n\t"]
REPO = Path(__file__).parents[1]


def assert_same_tokenizer(a: Tokenizer, b: Tokenizer) -> None:
    for text in TEXTS:
        assert a.encode(text) == b.encode(text) and a.encode_text(text) == b.encode_text(text), text
        assert a.encode_prompt(text) == b.encode_prompt(text), text
    assert (a.bos_token_id, a.eos_token_id, a.pad_token_id) == (b.bos_token_id, b.eos_token_id, b.pad_token_id)
    assert (a.eos_token_ids, a.special_token_ids, a.vocab_size) == (b.eos_token_ids, b.special_token_ids, b.vocab_size)
    assert (a.chat_template, a.adds_bos, a.source) == (b.chat_template, b.adds_bos, b.source)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def cached_gguf(tiny_model: TinyModel, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the tiny GGUF that read_checkpoint caches as it would a big file."""
    for module in (gguf_checkpoint_module, sys.modules["lucid.loader.early_tokenizer"]):
        monkeypatch.setattr(module, "CACHE_MIN_BYTES", 0)
    path = tmp_path / "model.gguf"
    shutil.copy(tiny_model.gguf_path, path)
    return path


def test_an_hf_folder_gives_the_checkpoints_tokenizer(tiny_model: TinyModel) -> None:
    early = early_tokenizer(str(tiny_model.hf_dir))
    assert early is not None
    assert_same_tokenizer(early, read_checkpoint(tiny_model.hf_dir, torch.float32).tokenizer)
    assert early_tokenizer(tiny_model.hf_dir / "config.json") is not None  # as read_checkpoint takes it too


def test_a_gguf_gives_the_tokenizer_once_its_prepared_entry_exists(cached_gguf: Path) -> None:
    assert early_tokenizer(str(cached_gguf)) is None  # no entry yet: only reading the GGUF would tell
    checkpoint = read_checkpoint(cached_gguf, torch.bfloat16)
    assert (prepared_entry(cached_gguf, "bfloat16") / "meta.json").is_file()
    early = early_tokenizer(str(cached_gguf), "bf16")
    assert early is not None
    assert_same_tokenizer(early, checkpoint.tokenizer)
    assert early_tokenizer(str(cached_gguf), "float32") is None  # another dtype's entry is another key


def test_a_small_gguf_is_never_looked_up_in_the_cache(tiny_model: TinyModel, cache: Path) -> None:
    read_checkpoint(tiny_model.gguf_path, torch.bfloat16)  # below CACHE_MIN_BYTES: read whole, not cached
    assert early_tokenizer(str(tiny_model.gguf_path)) is None


def test_a_damaged_entry_gives_none(cached_gguf: Path) -> None:
    read_checkpoint(cached_gguf, torch.bfloat16)
    meta = prepared_entry(cached_gguf, "bfloat16") / "meta.json"
    meta.write_text(json.dumps({"tokenizer_fields": {"tokenizer.ggml.model": "bert"}}), encoding="utf-8")
    assert early_tokenizer(str(cached_gguf)) is None
    meta.write_text("{not json", encoding="utf-8")
    assert early_tokenizer(str(cached_gguf)) is None


def test_what_is_no_model_gives_none(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    for model in (tmp_path / "missing", tmp_path / "notes.txt", tmp_path, "gemma-3-270m"):  # the last: not pulled
        assert early_tokenizer(str(model)) is None, model


def test_the_default_model_is_not_assembled_for_it(cache: Path) -> None:
    for model in (None, "default", "qwen2.5-coder-0.5b-instruct"):
        assert early_tokenizer(model) is None
    assert not list(cache.glob("*.gguf*")), "the front must leave assembling to the engine process"


def test_it_imports_no_torch(tiny_model: TinyModel) -> None:
    """The API front process never imports torch: a fresh interpreter builds the tokenizer without it."""
    code = ("import sys; from lucid.loader.early_tokenizer import early_tokenizer; "
            f"tok = early_tokenizer({str(tiny_model.hf_dir)!r}); early_tokenizer(None); "
            "assert tok is not None and tok.encode('hi'), tok; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_default_models_early_tokenizer_is_the_checkpoints(real_gguf_path: Path) -> None:
    checkpoint = read_checkpoint(None, torch.bfloat16)  # makes sure the prepared entry exists
    early = early_tokenizer(None)
    assert early is not None
    assert_same_tokenizer(early, checkpoint.tokenizer)
    fim = "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n<|fim_middle|>"
    assert early.encode(fim) == checkpoint.tokenizer.encode(fim)
    assert early.encode_text(fim) == checkpoint.tokenizer.encode_text(fim)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])  # byte-level BPE, SentencePiece
def test_a_pulled_models_early_tokenizer_is_the_checkpoints(name: str) -> None:
    from lucid.loader import pull

    pull(name, progress=False)
    checkpoint = read_checkpoint(name, torch.bfloat16)
    early = early_tokenizer(name)
    assert early is not None
    assert_same_tokenizer(early, checkpoint.tokenizer)
