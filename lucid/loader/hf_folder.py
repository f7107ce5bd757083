"""Read a Hugging Face model folder: config.json, generation_config.json, (sharded) safetensors, tokenizer files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.loader.checkpoint import Checkpoint, model_slug
from lucid.loader.tensors import LazyTensors, open_safetensors
from lucid.loader.validate import check_tensor_shapes

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Buffers some old exporters saved next to the weights; the model recomputes them.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc}).") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot be read ({exc.strerror}).") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: expected a JSON object.")
    return raw


def _weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file that should hold it ('' maps to files to scan whole)."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{index}: has no 'weight_map' naming the shard of each tensor.")
        return {name: folder / shard for name, shard in weight_map.items()}
    if (folder / SINGLE_FILE).is_file():
        return {"": folder / SINGLE_FILE}
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return {f"*{i}": p for i, p in enumerate(shards)}
    hint = " (only .safetensors weights are supported; pytorch_model.bin is not)" \
        if any(folder.glob("pytorch_model*.bin")) else ""
    raise ModelLoadError(f"{folder}: no model weights: expected {SINGLE_FILE} or {INDEX_FILE}{hint}.")


def _open_tensors(folder: Path, dtype: torch.dtype) -> tuple[LazyTensors, dict[str, tuple[int, ...]], dict[str, str]]:
    """Open every shard memory-mapped; return lazy tensors, their shapes and their stored dtypes."""
    files = _weight_files(folder)
    handles = {p: open_safetensors(str(p)) for p in sorted(set(files.values()))}
    readers, shapes, formats = {}, {}, {}
    for path, handle in handles.items():
        for name in handle.keys():  # noqa: SIM118 (not a dict)
            if name.endswith(_IGNORED_SUFFIXES):
                continue
            if name in readers:
                raise ModelLoadError(f"{path}: tensor {name} is also stored in another shard.")
            tensor_slice = handle.get_slice(name)
            shapes[name] = tuple(tensor_slice.get_shape())
            formats[name] = tensor_slice.get_dtype()
            readers[name] = lambda h=handle, n=name: h.get_tensor(n)
    indexed = {name: path for name, path in files.items() if not name.startswith("*") and name}
    absent = [f"{n} (in {p.name})" for n, p in indexed.items() if n not in readers]
    if absent:
        raise ModelLoadError(f"{folder / INDEX_FILE}: names tensors its shards do not hold: {', '.join(absent[:5])}.")
    return LazyTensors(readers, dtype), shapes, formats


def read_hf_folder(folder: Path, dtype: torch.dtype) -> Checkpoint:
    """Read a Hugging Face Qwen2 folder; tensors stay memory-mapped until looked up."""
    from lucid.tokenizer import Tokenizer

    config = ModelConfig.from_json(folder / "config.json")
    gen_path = folder / "generation_config.json"
    generation_config = _read_json(gen_path) if gen_path.is_file() else {}
    tensors, shapes, formats = _open_tensors(folder, dtype)
    check_tensor_shapes(shapes, config, str(folder))
    if not (folder / "tokenizer.json").is_file():
        raise ModelLoadError(f"{folder}: no tokenizer.json; lucid needs the model's tokenizer beside its weights.")
    try:
        tokenizer = Tokenizer.from_hf_folder(folder)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 (the tokenizers library raises bare Exception on malformed files)
        raise ModelLoadError(f"{folder}: the tokenizer files cannot be read: {exc}") from None
    return Checkpoint(path=folder, name=model_slug(folder.resolve().name), config=config,
                      generation_config=generation_config, tokenizer=tokenizer, tensors=tensors,
                      stored_formats=formats)
