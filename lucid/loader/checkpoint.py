"""The Checkpoint record and read_checkpoint: one entry point that recognizes what a path holds."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.loader.tensors import parse_dtype

if TYPE_CHECKING:
    from lucid.tokenizer import Tokenizer

GGUF_MAGIC = b"GGUF"


@dataclass
class Checkpoint:
    """A model as read from disk: config, tokenizer and HF-named float tensors in the asked dtype."""

    path: Path
    name: str
    config: ModelConfig
    generation_config: dict[str, Any]
    tokenizer: Tokenizer
    tensors: Mapping[str, torch.Tensor]
    stored_formats: dict[str, str] = field(default_factory=dict)


def model_slug(text: str) -> str:
    """'Qwen2.5 Coder 0.5B Instruct' -> 'qwen2.5-coder-0.5b-instruct' (lower-case, no spaces)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.strip().lower()).strip("-")
    return slug or "model"


def is_gguf_file(path: Path) -> bool:
    """True when the file starts with GGUF's magic bytes."""
    try:
        with path.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def read_checkpoint(path: str | Path | None, dtype: str | torch.dtype = torch.bfloat16,
                    use_cache: bool | None = None) -> Checkpoint:
    """Read an HF folder, a .gguf file, or the default model (path None or "default").

    `use_cache` is for GGUF files: keep the dequantized weights as safetensors in the cache folder so the next
    load skips dequantization. None (the default) caches only files big enough for it to pay off.
    """
    from lucid.loader.default_model import DEFAULT_MODEL_NAME, default_model_path
    from lucid.loader.gguf_checkpoint import read_gguf_checkpoint
    from lucid.loader.hf_folder import read_hf_folder

    torch_dtype = parse_dtype(dtype)
    if path is None or str(path) == "default":
        checkpoint = read_gguf_checkpoint(default_model_path(), torch_dtype, use_cache)
        checkpoint.name = DEFAULT_MODEL_NAME
        return checkpoint

    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or folder. Give a Hugging Face model folder, a .gguf file, "
                             f"or 'default' for the built-in model.")
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
        return read_gguf_checkpoint(path, torch_dtype, use_cache)
    raise ModelLoadError(f"{path}: not a model: expected a .gguf file or a Hugging Face folder with config.json.")
