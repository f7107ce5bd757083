"""Weight-only quantized linear layers that stay quantized in memory, on PyTorch's CPU kernels.

Decoding one token reads every weight once, so tokens/s is bounded by bytes moved: int8 halves bf16's
bytes and int4 quarters them. Activations stay in the model's float dtype.
- Int8Linear: one symmetric scale per output row; `aten._weight_int8pack_mm`.
- Int4Linear: groups of 32 input columns, each with a scale and a minimum (asymmetric);
  `aten._weight_int4pack_mm_for_cpu` on the CPU (the CUDA kernel wants another packing, so CUDA keeps int8/bf16).
"""

from __future__ import annotations

import torch
from torch import nn

INT4_GROUP = 32


class Int8Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        w = weight.float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)                    # (out,)
        self.register_buffer("weight", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scale.to(dtype))
        self.bias = None if bias is None else nn.Parameter(bias.to(dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, self.in_features), self.weight, self.scales)
        y = y.view(*lead, self.out_features)                                          # (..., out)
        return y if self.bias is None else y + self.bias

    def dequantized(self) -> torch.Tensor:
        return self.weight.float() * self.scales.float()[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


class Int4Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        out_features, in_features = weight.shape
        if in_features % INT4_GROUP:
            raise ValueError(f"int4 needs in_features divisible by {INT4_GROUP}, got {in_features}")
        self.in_features, self.out_features = in_features, out_features
        groups = weight.float().view(out_features, in_features // INT4_GROUP, INT4_GROUP)  # (out, G, 32)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)                               # (out, G)
        scale = ((high - low) / 15.0).clamp(min=1e-12)
        q = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32)
        # The kernel computes w = (q - 8) * scale + zero, so zero = low + 8 * scale gives w = q * scale + low.
        zero = low + 8.0 * scale
        scales_and_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(dtype).contiguous()  # (G, out, 2)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.view(out_features, in_features), 1)
        self.register_buffer("weight", packed)                     # (out, in/2) uint8, two 4-bit values a byte
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        self.bias = None if bias is None else nn.Parameter(bias.to(dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, self.in_features), self.weight, INT4_GROUP,
                                                        self.scales_and_zeros)
        y = y.view(*lead, self.out_features)                                          # (..., out)
        return y if self.bias is None else y + self.bias

    def dequantized(self) -> torch.Tensor:
        eye = torch.eye(self.in_features, dtype=self.scales_and_zeros.dtype)
        return self.forward(eye).float().t() - (0 if self.bias is None else self.bias.float()[:, None])

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"int4 g{INT4_GROUP}")
