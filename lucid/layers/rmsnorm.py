"""RMSNorm as Qwen2 uses it: normalize in float32 for stability, scale by a learned weight, cast back."""

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused op; it accumulates in float32 whatever x's dtype, like HF's explicit upcast, then
        # rounds to x's dtype before the weight multiplies, as HF does.
        return self.weight * F.rms_norm(x, (x.shape[-1],), eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
