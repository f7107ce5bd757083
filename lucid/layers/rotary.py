"""Rotary position embedding (RoPE), "rotate half" layout as in Hugging Face's Qwen2.

Each pair (x[i], x[i + d/2]) of a head is rotated by the angle position * theta^(-2i/d), so the dot
product of a query and a key depends only on their distance.
"""

import math
from typing import Any

import torch
from torch import nn


def inverse_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None = None) -> torch.Tensor:
    """theta^(-2i/d) for each pair i (float64), adjusted by a rope scaling: "linear" divides every frequency by
    `factor`; "llama3" divides only the low frequencies (long wavelengths) and blends the band between."""
    # On the CPU even inside `torch.device("meta")` (models are built there): a meta arange goes through
    # torch._refs, whose first use imports torch._dynamo (seconds of every start-up).
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv_freq
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    if kind == "llama3":
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_context = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
        return torch.where(medium, blended, scaled)
    raise ValueError(f"unsupported rope scaling {kind!r}; lucid knows 'linear' and 'llama3'")


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float, max_positions: int,
                 scaling: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.max_positions = max_positions
        self.scaling = scaling
        inverse_frequencies(head_dim, theta, scaling)  # an unknown scaling fails here, at build time
        # Not buffers: the model is built on the meta device and these are made lazily where they are used.
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None
        # Every layer shares this module and rotates by the same positions in a step: compute cos/sin once.
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _tables(self, needed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < needed or self._cos.device != device:
            length = max(needed, min(self.max_positions, 4096))
            inv_freq = inverse_frequencies(self.head_dim, self.theta, self.scaling)
            angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)  # (length, head_dim/2)
            angles = torch.cat([angles, angles], dim=-1)                                 # (length, head_dim)
            self._cos = angles.cos().float().to(device)
            self._sin = angles.sin().float().to(device)
        return self._cos, self._sin

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (...,) ; q (..., n_heads, head_dim) ; k (..., n_kv_heads, head_dim) -> rotated q, k."""
        if self._last is None or self._last[0] is not positions:
            cos_table, sin_table = self._tables(int(positions.max()) + 1, q.device)
            # In the activations' dtype, as Hugging Face's Qwen2 rotates (and one cast per step, not per layer).
            cos = cos_table[positions].unsqueeze(-2).to(q.dtype)  # (..., 1, head_dim), broadcast over heads
            sin = sin_table[positions].unsqueeze(-2).to(q.dtype)
            self._last = (positions, cos, sin)
        _, cos, sin = self._last
        return _rotate(q, cos, sin), _rotate(k, cos, sin)

    def shift(self, k: torch.Tensor, delta: int) -> torch.Tensor:
        """Keys already rotated for their positions, (..., head_dim), rotated for positions `delta` further on: a
        rotation by angle(p) then by angle(delta) is the rotation by angle(p + delta). In float32, cast back."""
        angles = delta * inverse_frequencies(self.head_dim, self.theta, self.scaling)      # (head_dim/2,) float64
        angles = torch.cat([angles, angles]).to(device=k.device)                             # (head_dim,)
        return _rotate(k.float(), angles.cos().float(), angles.sin().float()).to(k.dtype)

    def extra_repr(self) -> str:
        scaled = f", scaling={self.scaling.get('rope_type', self.scaling.get('type'))}" if self.scaling else ""
        return f"head_dim={self.head_dim}, theta={self.theta:g}{scaled}"


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated_half = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated_half * sin
