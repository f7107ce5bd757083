"""The explicit tables between GGUF tensor names (llama.cpp's) and Hugging Face names, per family.

The whole-model names are the same for every family; the per-layer tables live in the family files
(lucid/models/*.py) and reach the loader through the registry.
"""

from __future__ import annotations

import re

from lucid.models.qwen2 import GGUF_LAYER_NAMES as LAYER_NAMES  # Qwen2's table (the default family)
from lucid.models.registry import family_for_gguf

__all__ = ["GLOBAL_NAMES", "LAYER_NAMES", "gguf_to_hf", "hf_to_gguf"]

# Whole-model tensors: GGUF name -> HF name.
GLOBAL_NAMES: dict[str, str] = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

_GGUF_LAYER = re.compile(r"blk\.(\d+)\.(.+)")
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_HF_TO_GLOBAL = {hf: gg for gg, hf in GLOBAL_NAMES.items()}


def _layer_names(arch: str) -> dict[str, str]:
    return family_for_gguf(arch, "GGUF").gguf_layer_names


def gguf_to_hf(name: str, arch: str = "qwen2") -> str | None:
    """HF name of a GGUF tensor of a `general.architecture` model, or None when the table does not know it."""
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    match = _GGUF_LAYER.fullmatch(name)
    layer_names = _layer_names(arch)
    if match and match.group(2) in layer_names:
        return f"model.layers.{match.group(1)}.{layer_names[match.group(2)]}"
    return None


def hf_to_gguf(name: str, arch: str = "qwen2") -> str | None:
    """GGUF name of an HF tensor, or None when the table does not know it."""
    if name in _HF_TO_GLOBAL:
        return _HF_TO_GLOBAL[name]
    match = _HF_LAYER.fullmatch(name)
    reverse = {hf: gg for gg, hf in _layer_names(arch).items()}
    if match and match.group(2) in reverse:
        return f"blk.{match.group(1)}.{reverse[match.group(2)]}"
    return None
