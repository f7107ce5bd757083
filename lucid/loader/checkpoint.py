"""The records a model is read into (Checkpoint, and GGUFContents: a GGUF file before its tokenizer is built).

The formats (hf_folder, gguf_file) and the caches depend on these types; this module depends on none of them.
`lucid.loader.read.read_checkpoint` is the entry point that recognizes what a path holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucid.config import ModelConfig

if TYPE_CHECKING:
    import torch

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


@dataclass
class GGUFContents:
    """Everything lucid takes from a GGUF file, before the tokenizer is built (also what the prepared cache keeps)."""

    name: str
    config: ModelConfig
    generation_config: dict[str, Any]
    tokenizer_fields: dict[str, Any]
    stored_formats: dict[str, str]
    tensors: Mapping[str, torch.Tensor]


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
