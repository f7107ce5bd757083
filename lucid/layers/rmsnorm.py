"""RMSNorm: normalize in float32 for stability, scale by a learned weight, cast back.

Two conventions: Qwen2/Qwen3/Llama scale by `weight` (initialised to ones) after rounding to the input's dtype;
Gemma scales by `1 + weight` (initialised to zeros) in float32 before rounding.
"""

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

    def scale_f32(self) -> torch.Tensor:
        """The factor the normalized x is multiplied by, float32: what the fused C++ step takes as a plain RMSNorm
        weight (so it needs no second convention)."""
        return self.weight.detach().float().contiguous()

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class GemmaRMSNorm(RMSNorm):
    """Gemma's variant: x / rms(x) * (1 + weight), all in float32, then cast to x's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype)

    def scale_f32(self) -> torch.Tensor:
        return (1.0 + self.weight.detach().float()).contiguous()  # (1 + w) folded: the kernel sees a plain RMSNorm
