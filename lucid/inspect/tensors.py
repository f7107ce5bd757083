"""One tensor at a glance: dtype, shape, statistics and a corner of its values (the walk-through's view of
`state_dict()["model.layers.0.self_attn.q_proj.weight"]`)."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class TensorSummary:
    name: str
    dtype: str
    shape: list[int]
    numel: int
    stored_format: str | None = None
    min: float | None = None           # None on the meta device: a model built from a config has no values
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    corner: list[list[float]] | None = None  # the top-left rows × cols (a 1-D tensor is one row)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_tensor(model: nn.Module, name: str) -> torch.Tensor:
    """model.state_dict()[name], with a helpful error that suggests close names."""
    state = model.state_dict(keep_vars=True)
    if name not in state:
        close = difflib.get_close_matches(name, list(state), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else " Run `lucid inspect` to see every name."
        raise KeyError(f"no tensor named {name!r}.{hint}")
    return state[name].detach()


def summarize_tensor(name: str, tensor: torch.Tensor, corner: int = 3, stored_format: str | None = None
                     ) -> TensorSummary:
    """Statistics in float32 (bf16 sums lose digits); `corner` rows and columns of values."""
    summary = TensorSummary(name=name, dtype=str(tensor.dtype).removeprefix("torch."), shape=list(tensor.shape),
                            numel=tensor.numel(), stored_format=stored_format)
    if tensor.is_meta or tensor.numel() == 0:
        return summary
    values = tensor.float()
    summary.min = values.min().item()
    summary.max = values.max().item()
    summary.mean = values.mean().item()
    summary.std = values.std().item() if values.numel() > 1 else 0.0
    grid = values.reshape(1, -1) if values.dim() <= 1 else values.reshape(values.shape[0], -1)
    summary.corner = [[round(v, 6) for v in row] for row in grid[:corner, :corner].tolist()]
    return summary
