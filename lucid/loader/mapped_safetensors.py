"""Open a .safetensors file as tensors over a memory map of it: nothing is read or copied up front.

The packed-weights cache is loaded on every start; reading its ~0.5 GB into fresh memory took most of a warm
start-up. Mapped, the pages come from the OS page cache as the weights are first used (and are shared with
other processes serving the same entry). The map is private (copy-on-write): writing a tensor never changes the
file. The file must not be rewritten in place while mapped; the caches only ever replace entries by renaming.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import torch

DTYPES = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
          "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
          "F64": torch.float64}


class MappedFileError(ValueError):
    """The file is not a well-formed safetensors file."""


def map_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """{name: tensor} viewing a private map of the file. Raises MappedFileError for a malformed file."""
    with open(path, "rb") as f:
        try:
            region = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except ValueError as exc:                                        # an empty file cannot be mapped
            raise MappedFileError(f"{path}: {exc}") from None
    size = len(region)
    header_len = int.from_bytes(region[:8], "little") if size >= 8 else -1
    if not 0 < header_len <= size - 8:
        raise MappedFileError(f"{path}: no safetensors header")
    try:
        header = json.loads(region[8:8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MappedFileError(f"{path}: bad header ({exc})") from None
    header.pop("__metadata__", None)
    data = torch.frombuffer(region, dtype=torch.uint8)                  # keeps `region` alive with every view
    start = 8 + header_len
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = DTYPES.get(info["dtype"])
        if dtype is None or not start <= start + begin <= start + end <= size:
            raise MappedFileError(f"{path}: tensor {name} has a bad dtype or lies outside the file")
        raw = data[start + begin:start + end]
        element = torch.empty((), dtype=dtype).element_size()
        if (start + begin) % element:                                   # misaligned for its dtype: copy this one
            raw = raw.clone()
        tensors[name] = raw.view(dtype).view(info["shape"])
    return tensors
