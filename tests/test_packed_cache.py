"""The packed-weights cache: the second quantized load rebuilds the serving model from packed tensors, without
reading or quantizing the float weights, and serves exactly the same tokens."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lucid import SamplingParams, kernels
from lucid.loader import load_quantized
from lucid.loader import packed_cache as packed_cache_module
from lucid.testing import TinyModel

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not kernels.available(), reason=f"lucid kernels: {kernels.unavailable_reason()}")]


@pytest.fixture
def gguf_copy(tiny_model: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(packed_cache_module, "MIN_SOURCE_BYTES", 0)  # the tiny model is below the usual size
    path = tmp_path / "model.gguf"
    shutil.copy(tiny_model.gguf_path, path)
    return path


def _greedy(model_path: Path) -> list[int]:
    from lucid.llm import LLM

    llm = LLM(str(model_path), dtype="float32", quantization="mixed")
    return llm.generate([[1, 2, 3, 4, 5]], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0] \
        .outputs[0].token_ids


@pytest.mark.parametrize("scheme", ["int8", "int4", "mixed"])
def test_second_load_is_rebuilt_from_packed_tensors(gguf_copy: Path, scheme: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_quantized(gguf_copy, scheme, dtype="float32")
    entries = list((gguf_copy.parent / "cache" / "packed").iterdir())
    assert len(entries) == 1 and entries[0].name.endswith(f"-float32-{scheme}-p{packed_cache_module.PACKED_FORMAT}")

    def no_float_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the float model was built although a packed entry exists")

    monkeypatch.setattr("lucid.models.base.build_model", no_float_model)
    second = load_quantized(gguf_copy, scheme, dtype="float32")
    want, got = first.model.state_dict(), second.model.state_dict()
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert [type(m) for m in first.model.modules()] == [type(m) for m in second.model.modules()]


def test_cached_model_serves_the_same_tokens(gguf_copy: Path) -> None:
    assert _greedy(gguf_copy) == _greedy(gguf_copy)   # the first builds the entry, the second reads it
    assert any((gguf_copy.parent / "cache" / "packed").iterdir())


def test_damaged_entry_is_rebuilt(gguf_copy: Path) -> None:
    load_quantized(gguf_copy, "mixed", dtype="float32")
    (entry,) = (gguf_copy.parent / "cache" / "packed").iterdir()
    (entry / packed_cache_module.WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    loaded = load_quantized(gguf_copy, "mixed", dtype="float32")
    assert loaded.model.lm_head.qweight.numel() > 0
    assert (entry / packed_cache_module.WEIGHTS_FILE).stat().st_size > 100   # written again


def test_new_version_of_the_source_replaces_the_old_entry(gguf_copy: Path) -> None:
    load_quantized(gguf_copy, "mixed", dtype="float32")
    old = set((gguf_copy.parent / "cache" / "packed").iterdir())
    gguf_copy.write_bytes(gguf_copy.read_bytes())      # same bytes, new mtime: a new version
    load_quantized(gguf_copy, "mixed", dtype="float32")
    new = set((gguf_copy.parent / "cache" / "packed").iterdir())
    assert len(new) == 1 and new != old


def test_small_sources_are_not_cached(tiny_model: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path / "cache"))
    load_quantized(tiny_model.gguf_path, "mixed", dtype="float32")
    assert not (tmp_path / "cache" / "packed").exists()


def test_entry_missing_a_tensor_is_rebuilt(gguf_copy: Path) -> None:
    from safetensors.torch import load_file, save_file

    load_quantized(gguf_copy, "mixed", dtype="float32")
    (entry,) = (gguf_copy.parent / "cache" / "packed").iterdir()
    weights = entry / packed_cache_module.WEIGHTS_FILE
    tensors = load_file(str(weights))
    tensors.pop("lm_head.qweight")
    save_file(tensors, str(weights))
    loaded = load_quantized(gguf_copy, "mixed", dtype="float32")   # falls back to quantizing the float weights
    assert loaded.model.lm_head.qweight.numel() > 0
    assert "lm_head.qweight" in load_file(str(weights))            # and writes a complete entry again


def test_entry_packed_under_another_int4_choice_is_rebuilt(gguf_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An entry written when `-q mixed` put this family's gate/up in int4; the family now keeps them int8 (as
    # Gemma 3 does): the old entry must not be read as int8 (its int4 bytes would fit the int8 buffers' names).
    from safetensors.torch import load_file

    from lucid.kernels.linear import Q8Linear
    from lucid.models.qwen2 import Qwen2ForCausalLM

    load_quantized(gguf_copy, "mixed", dtype="float32")
    monkeypatch.setattr(Qwen2ForCausalLM, "mixed_int4_layers", ())
    loaded = load_quantized(gguf_copy, "mixed", dtype="float32")
    gate_up = loaded.model.model.layers[0].mlp.gate_up_proj
    assert isinstance(gate_up, Q8Linear)
    (entry,) = (gguf_copy.parent / "cache" / "packed").iterdir()
    assert "model.layers.0.mlp.gate_up_proj.mins" not in load_file(str(entry / packed_cache_module.WEIGHTS_FILE))
