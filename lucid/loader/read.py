"""read_checkpoint: one entry point that recognizes what a path (or a pulled model's name) holds."""

from __future__ import annotations

from pathlib import Path

import torch

from lucid.errors import ModelLoadError
from lucid.loader.catalog import pullable_names, pulled_path
from lucid.loader.checkpoint import Checkpoint, is_gguf_file
from lucid.loader.default_model import DEFAULT_MODEL_NAME, default_model_path
from lucid.loader.gguf_checkpoint import read_gguf_checkpoint
from lucid.loader.hf_folder import read_hf_folder
from lucid.loader.tensors import parse_dtype


def read_checkpoint(path: str | Path | None, dtype: str | torch.dtype = torch.bfloat16,
                    use_cache: bool | None = None, prepare_tokenizer: bool = True) -> Checkpoint:
    """Read an HF folder, a .gguf file, a pulled model by name (`lucid models`), or the default model (path None,
    "default" or its name).

    `use_cache` is for GGUF files: keep the dequantized weights as safetensors in the cache folder so the next
    load skips dequantization. None (the default) caches only files big enough for it to pay off.
    `prepare_tokenizer` False leaves a GGUF's byte-level BPE unbuilt until first used (see Tokenizer.prepare):
    for a process that only turns token ids into text.
    """
    torch_dtype = parse_dtype(dtype)
    if path is None or str(path) in ("default", DEFAULT_MODEL_NAME):
        checkpoint = read_gguf_checkpoint(default_model_path(), torch_dtype, use_cache, prepare_tokenizer)
        checkpoint.name = DEFAULT_MODEL_NAME
        return checkpoint

    named = pulled_path(str(path)) if not Path(str(path)).expanduser().exists() else None
    if named is not None:
        checkpoint = read_gguf_checkpoint(named, torch_dtype, use_cache, prepare_tokenizer)
        checkpoint.name = str(path)
        return checkpoint

    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or folder. Give a Hugging Face model folder, a .gguf file, "
                             f"a pulled model's name ({', '.join(pullable_names())}), or 'default'.")
    if path.is_dir():
        if (path / "config.json").is_file():
            return read_hf_folder(path, torch_dtype)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            found = "no .gguf file" if not ggufs else f"{len(ggufs)} .gguf files"
            raise ModelLoadError(f"{path}: not a model folder: it has no config.json and {found}.")
        path = ggufs[0]
    elif path.name == "config.json" or path.suffix == ".safetensors":
        return read_hf_folder(path.parent, torch_dtype)

    if path.suffix.lower() == ".gguf" or is_gguf_file(path):
        return read_gguf_checkpoint(path, torch_dtype, use_cache, prepare_tokenizer)
    raise ModelLoadError(f"{path}: not a model: expected a .gguf file or a Hugging Face folder with config.json.")
