"""Rotary position embedding (RoPE), "rotate half" layout as in Hugging Face's Qwen2.

Each pair (x[i], x[i + d/2]) of a head is rotated by the angle position * theta^(-2i/d), so the dot
product of a query and a key depends only on their distance.
"""

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float, max_positions: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.max_positions = max_positions
        # Not buffers: the model is built on the meta device and these are made lazily where they are used.
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None
        # Every layer shares this module and rotates by the same positions in a step: compute cos/sin once.
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _tables(self, needed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < needed or self._cos.device != device:
            length = max(needed, min(self.max_positions, 4096))
            inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim))
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

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta:g}"


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated_half = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated_half * sin
