"""Quantized linear layers on lucid's own kernels: drop-in for Int4Linear / Int8Linear (same constructor).

Every row count runs the integer VNNI kernel: it reads each weight byte once per 8 rows, and int8 dot products
(`vpdpbusd`, 64 multiply-adds an instruction) out-run bf16 ones, so on a Zen 4 it beat dequantize + bf16
F.linear even for prefill (M = 512: ~1.5x, benchmarks/kernels.py). `PREFILL_ROWS` switches large M to
dequantize + F.linear for CPUs where that is not so.
Construct these only where `lucid.kernels.available()` is True; otherwise keep the PyTorch-kernel layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lucid import kernels

# From this many rows on, dequantize to bf16 and use F.linear; None: always the integer kernel (faster here).
PREFILL_ROWS: int | None = None


class _QuantLinear(nn.Module):
    fmt = ""
    buffer_names: tuple[str, ...] = ()   # the packed tensors, in the order `pack` returns them

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        kernels.ext()  # fail early (RuntimeError with the reason) where the kernels cannot run
        self._set_weights(weight.shape[0], weight.shape[1], bias, dtype, self.pack(weight))

    @classmethod
    def from_packed(cls, packed: tuple[torch.Tensor, ...], bias: torch.Tensor | None, out_features: int,
                    in_features: int, dtype: torch.dtype) -> _QuantLinear:
        """A layer over tensors packed earlier (the packed-weights cache), without the float weight."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        kernels.ext()
        layer._set_weights(out_features, in_features, bias, dtype, packed)
        return layer

    @staticmethod
    def pack(weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _set_weights(self, out_features: int, in_features: int, bias: torch.Tensor | None, dtype: torch.dtype,
                     packed: tuple[torch.Tensor, ...]) -> None:
        self.out_features, self.in_features = out_features, in_features
        self.dtype = dtype
        self.bias = None if bias is None else nn.Parameter(bias.to(dtype), requires_grad=False)
        # The kernel adds a float32 bias in its epilogue (saves a separate elementwise op per call).
        self.register_buffer("bias_f32", None if bias is None else bias.float().contiguous(), persistent=False)
        for name, tensor in zip(self.buffer_names, packed, strict=True):
            self.register_buffer(name, tensor)

    def _kernel(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dequantized_bf16(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if PREFILL_ROWS is not None and x.numel() >= PREFILL_ROWS * self.in_features:
            w = self.dequantized_bf16().to(x.dtype)
            return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))
        # Decode: the kernel takes any leading shape and dtype itself; keep Python work here minimal, this runs
        # ~100 times per generated token.
        return self._kernel(x)

    def dequantized(self) -> torch.Tensor:
        """The weight the kernel multiplies by, as float32 (out, in)."""
        return self.dequantized_bf16().float()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self.fmt} (lucid kernels)")


class Q4Linear(_QuantLinear):
    """4-bit weights, blocks of 32 along K with a float16 scale and min each (4.5 bits a weight)."""

    fmt = "q4 g32"
    buffer_names = ("qweight", "scales", "mins")
    pack = staticmethod(kernels.pack_q4)

    def _kernel(self, x: torch.Tensor) -> torch.Tensor:
        b = self._buffers  # direct dict access: nn.Module.__getattr__ is slow on the per-token path
        return kernels.ext().q4_gemm(x, b["qweight"], b["scales"], b["mins"], b["bias_f32"], self.out_features)

    def dequantized_bf16(self) -> torch.Tensor:
        return kernels.q4_dequantize(self.qweight, self.scales, self.mins, self.out_features)


class Q8Linear(_QuantLinear):
    """8-bit symmetric weights, blocks of 32 along K with a float16 scale each (8.5 bits a weight)."""

    fmt = "q8 g32"
    buffer_names = ("qweight", "scales")
    pack = staticmethod(kernels.pack_q8)

    def _kernel(self, x: torch.Tensor) -> torch.Tensor:
        b = self._buffers
        return kernels.ext().q8_gemm(x, b["qweight"], b["scales"], b["bias_f32"], self.out_features)

    def dequantized_bf16(self) -> torch.Tensor:
        return kernels.q8_dequantize(self.qweight, self.scales, self.out_features)
