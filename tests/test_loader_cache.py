"""The prepared-weights cache: a second GGUF load reads safetensors instead of dequantizing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from lucid.loader import cache_dir, read_checkpoint
from lucid.loader import gguf_checkpoint as gguf_checkpoint_module
from lucid.loader.cache import prepared_entry
from lucid.testing import TinyModel

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def gguf_copy(tiny_model: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "model.gguf"
    shutil.copy(tiny_model.gguf_path, path)
    return path


def _forbid_reading_gguf(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("the GGUF was read although a prepared entry exists")

    monkeypatch.setattr(gguf_checkpoint_module, "read_gguf", fail)


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir().is_dir()


def test_second_load_comes_from_the_cache(gguf_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True)
    entry = prepared_entry(gguf_copy, torch.bfloat16)
    assert (entry / "model.safetensors").is_file() and (entry / "meta.json").is_file()

    _forbid_reading_gguf(monkeypatch)
    second = read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True)
    assert second.config == first.config and second.name == first.name
    assert second.stored_formats == first.stored_formats
    assert second.generation_config == first.generation_config
    assert second.tokenizer.encode("hello 你好 😀") == first.tokenizer.encode("hello 你好 😀")
    assert set(second.tensors) == set(first.tensors)
    for name in first.tensors:
        assert second.tensors[name].dtype == torch.bfloat16
        assert torch.equal(second.tensors[name], first.tensors[name]), name


def test_cache_is_keyed_by_dtype(gguf_copy: Path) -> None:
    read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True)
    fp32 = read_checkpoint(gguf_copy, torch.float32, use_cache=True)
    assert prepared_entry(gguf_copy, torch.bfloat16).is_dir() and prepared_entry(gguf_copy, torch.float32).is_dir()
    assert fp32.tensors["lm_head.weight"].dtype == torch.float32


def test_a_changed_file_replaces_its_old_entry(gguf_copy: Path) -> None:
    read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True)
    old = prepared_entry(gguf_copy, torch.bfloat16)
    stat = gguf_copy.stat()
    os.utime(gguf_copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    read_checkpoint(gguf_copy, torch.bfloat16, use_cache=True)
    new = prepared_entry(gguf_copy, torch.bfloat16)
    assert new != old and new.is_dir() and not old.exists()


def test_a_damaged_entry_is_only_a_miss(gguf_copy: Path) -> None:
    reference = read_checkpoint(gguf_copy, torch.float32, use_cache=True)
    weights = prepared_entry(gguf_copy, torch.float32) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    again = read_checkpoint(gguf_copy, torch.float32, use_cache=True)
    assert torch.equal(again.tensors["model.norm.weight"], reference.tensors["model.norm.weight"])
    assert (prepared_entry(gguf_copy, torch.float32) / "model.safetensors").stat().st_size > 100


def test_small_files_are_not_cached_by_default(gguf_copy: Path) -> None:
    read_checkpoint(gguf_copy, torch.bfloat16)
    assert not (cache_dir() / "prepared").exists()


def test_an_unusable_cache_folder_only_costs_speed(tiny_model: TinyModel, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LUCID_CACHE_DIR", str(blocker / "cache"))
    checkpoint = read_checkpoint(tiny_model.gguf_path, torch.float32, use_cache=True)
    assert len(checkpoint.tensors) == len(tiny_model.gguf_types)
