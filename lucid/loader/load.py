"""load(): a path on disk -> a ready model on a device, with its tokenizer and configs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lucid.config import ModelConfig
from lucid.loader.checkpoint import read_checkpoint
from lucid.loader.tensors import parse_dtype

if TYPE_CHECKING:
    from lucid.models.qwen2 import Qwen2ForCausalLM
    from lucid.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    """What `load` returns: the model with everything needed to serve it."""

    model: Qwen2ForCausalLM
    tokenizer: Tokenizer
    config: ModelConfig
    generation_config: dict[str, Any]
    name: str
    path: Path
    stored_formats: dict[str, str]


def load(path: str | Path | None = None, dtype: str | torch.dtype = "bfloat16", device: str = "cpu") -> LoadedModel:
    """Read a checkpoint (HF folder, .gguf, or None/"default" for the default model) and build the model."""
    from lucid.models.qwen2 import build_model

    torch_dtype = parse_dtype(dtype)
    checkpoint = read_checkpoint(path, torch_dtype)
    model = build_model(checkpoint.config, checkpoint.tensors, torch_dtype, device, source=str(checkpoint.path))
    return LoadedModel(model=model, tokenizer=checkpoint.tokenizer, config=checkpoint.config,
                       generation_config=checkpoint.generation_config, name=checkpoint.name,
                       path=checkpoint.path, stored_formats=checkpoint.stored_formats)
