"""read_checkpoint: one entry point that reads whatever a path (or a pulled model's name) holds."""

from __future__ import annotations

from pathlib import Path

import torch

from lucid.loader.checkpoint import Checkpoint
from lucid.loader.gguf_checkpoint import read_gguf_checkpoint
from lucid.loader.hf_folder import read_hf_folder
from lucid.loader.locate import locate_model
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
    found = locate_model(path)
    if found.kind == "hf":
        return read_hf_folder(found.path, torch_dtype)
    checkpoint = read_gguf_checkpoint(found.path, torch_dtype, use_cache, prepare_tokenizer)
    if found.name is not None:
        checkpoint.name = found.name
    return checkpoint
