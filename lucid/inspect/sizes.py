"""Bytes: the weights in each float dtype, as stored on disk (quantized GGUF blocks), and the KV cache per token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from lucid.config import ModelConfig
from lucid.inspect.params import unique_parameters

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# safetensors dtype names that GGUF's table does not know (GGUF spells the float ones the same way).
_SAFETENSORS_BYTES = {"F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass
class StoredFormat:
    """All tensors kept in one on-disk format, e.g. Q5_0: 133 tensors, their elements and bytes."""

    name: str
    tensors: int
    elements: int
    bytes: int

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.bytes / self.elements if self.elements else 0.0


def dtype_label(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def weight_bytes(num_params: int, dtype: torch.dtype) -> int:
    """Bytes of `num_params` elements of a float dtype (torch knows each dtype's item size)."""
    return num_params * torch.empty((), dtype=dtype).element_size()


def bytes_by_dtype(num_params: int) -> dict[str, int]:
    """{'float32': ..., 'bfloat16': ..., 'float16': ...} for the same number of weights."""
    return {dtype_label(d): weight_bytes(num_params, d) for d in FLOAT_DTYPES}


def loaded_bytes(model: nn.Module) -> int:
    """Bytes the model's unique Parameters take in memory now (in whatever dtype they were loaded)."""
    return sum(p.numel() * p.element_size() for p in unique_parameters(model).values())


def format_bytes_per_block(fmt: str) -> tuple[int, int]:
    """(elements per block, bytes per block) of a stored format: GGUF's table, else a safetensors dtype."""
    import gguf

    try:
        return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[fmt]]
    except KeyError:
        if fmt in _SAFETENSORS_BYTES:
            return 1, _SAFETENSORS_BYTES[fmt]
        raise ValueError(f"unknown stored tensor format {fmt!r}") from None


def stored_sizes(model: nn.Module, stored_formats: Mapping[str, str]) -> list[StoredFormat]:
    """Group the checkpoint's tensors by on-disk format, biggest first. Shapes come from the model (same names)."""
    shapes = {name: p.numel() for name, p in model.named_parameters(remove_duplicate=False)}
    groups: dict[str, StoredFormat] = {}
    for name, fmt in stored_formats.items():
        if name not in shapes:
            continue  # e.g. rotary tables some files carry; the model does not hold them
        per_block, block_bytes = format_bytes_per_block(fmt)
        group = groups.setdefault(fmt, StoredFormat(fmt, 0, 0, 0))
        group.tensors += 1
        group.elements += shapes[name]
        group.bytes += -(-shapes[name] // per_block) * block_bytes  # whole blocks, rounded up
    return sorted(groups.values(), key=lambda g: -g.bytes)


def kv_bytes_per_token(config: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> int:
    """K and V, for every layer and KV head: 2 × layers × kv_heads × head_dim × bytes (12,288 for Qwen2-0.5B, bf16)."""
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * weight_bytes(1, dtype)
