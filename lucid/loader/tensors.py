"""Tensor plumbing shared by the readers: dtype names and a mapping that reads tensors only when asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from lucid.errors import ModelLoadError
from lucid.loader.dtypes import dtype_name


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'bfloat16' / 'bf16' / torch.bfloat16 ... -> torch.dtype (only the float types a model can run in)."""
    return getattr(torch, dtype_name(dtype))


class LazyTensors(Mapping[str, torch.Tensor]):
    """Name -> tensor, each read (from a memory-mapped file) and cast to `dtype` when looked up.

    The model builder looks each tensor up once, so the whole checkpoint never sits in memory twice.
    """

    def __init__(self, readers: Mapping[str, Callable[[], torch.Tensor]], dtype: torch.dtype) -> None:
        self._readers = dict(readers)
        self._dtype = dtype

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor = self._readers[name]()
        return tensor if tensor.dtype == self._dtype else tensor.to(self._dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self._readers)

    def __len__(self) -> int:
        return len(self._readers)

    def __contains__(self, name: object) -> bool:
        return name in self._readers


def open_safetensors(path: str, what: str = "safetensors file") -> Any:  # a safetensors.safe_open handle
    """safe_open a file, turning the library's errors into a ModelLoadError that names the file."""
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(path, framework="pt")
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such {what}.") from None
    except (SafetensorError, OSError) as exc:  # truncated, corrupt, unreadable
        raise ModelLoadError(f"{path}: not a readable {what} (truncated or corrupt?): {exc}") from None
