"""Quantized linear layers on lucid's own kernels: drop-in for Int4Linear / Int8Linear (same constructor).

Decode (few rows) runs the integer VNNI kernel, which reads each weight byte once per call. Prefill (many rows)
dequantizes to bfloat16 and uses F.linear: there the work is arithmetic, not bytes, and oneDNN's bf16 GEMM wins.
Construct these only where `lucid.kernels.available()` is True; otherwise keep the PyTorch-kernel layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lucid import kernels

# From this many rows on, dequantize + bf16 GEMM beats the integer kernel (measured by benchmarks/kernels.py).
PREFILL_ROWS = 32


class _QuantLinear(nn.Module):
    fmt = ""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        kernels.ext()  # fail early (RuntimeError with the reason) where the kernels cannot run
        self.out_features, self.in_features = weight.shape
        self.dtype = dtype
        self.bias = None if bias is None else nn.Parameter(bias.to(dtype), requires_grad=False)
        # The kernel adds a float32 bias in its epilogue (saves a separate elementwise op per call).
        self.register_buffer("bias_f32", None if bias is None else bias.float().contiguous(), persistent=False)

    def _kernel(self, x2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dequantized_bf16(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] >= PREFILL_ROWS:
            w = self.dequantized_bf16().to(x2.dtype)
            y = F.linear(x2, w, None if self.bias is None else self.bias.to(x2.dtype))
            return y.view(*lead, self.out_features)
        out_dtype = x2.dtype
        if out_dtype not in (torch.float32, torch.bfloat16):
            x2 = x2.float()
        y = self._kernel(x2.contiguous())
        return y.to(out_dtype).view(*lead, self.out_features)

    def dequantized(self) -> torch.Tensor:
        """The weight the kernel multiplies by, as float32 (out, in)."""
        return self.dequantized_bf16().float()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self.fmt} (lucid kernels)")


class Q4Linear(_QuantLinear):
    """4-bit weights, blocks of 32 along K with a float16 scale and min each (4.5 bits a weight)."""

    fmt = "q4 g32"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__(weight, bias, dtype)
        qs, d, m = kernels.pack_q4(weight)
        self.register_buffer("qweight", qs)
        self.register_buffer("scales", d)
        self.register_buffer("mins", m)

    def _kernel(self, x2: torch.Tensor) -> torch.Tensor:
        return kernels.q4_gemm(x2, self.qweight, self.scales, self.mins, self.out_features, self.bias_f32)

    def dequantized_bf16(self) -> torch.Tensor:
        return kernels.q4_dequantize(self.qweight, self.scales, self.mins, self.out_features)


class Q8Linear(_QuantLinear):
    """8-bit symmetric weights, blocks of 32 along K with a float16 scale each (8.5 bits a weight)."""

    fmt = "q8 g32"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__(weight, bias, dtype)
        qs, d = kernels.pack_q8(weight)
        self.register_buffer("qweight", qs)
        self.register_buffer("scales", d)

    def _kernel(self, x2: torch.Tensor) -> torch.Tensor:
        return kernels.q8_gemm(x2, self.qweight, self.scales, self.out_features, self.bias_f32)

    def dequantized_bf16(self) -> torch.Tensor:
        return kernels.q8_dequantize(self.qweight, self.scales, self.out_features)
