"""lucid's own CPU kernels on AVX-512 VNNI: weight-only quantized matmul (qgemm.h) and the fused decode step of
the whole decoder stack (decode.h, used through `lucid.kernels.fused`).

The C++ extension is compiled on first use (about a minute, once per machine and torch version) into
`$LUCID_CACHE_DIR/kernels` (default `~/.cache/lucid/kernels`), never at `import lucid`. Where the CPU lacks the
instructions or the build fails, `available()` is False, `unavailable_reason()` says why (also logged once),
and callers keep PyTorch's kernels.

Packed formats (built once at load time from float weights by `pack_q4` / `pack_q8`):
- Q4: blocks of 32 along K, 4-bit unsigned q with a float16 scale d and min m per row and block (w ~ d*q + m);
  4.5 bits a weight. (float16 values are kept in int16 tensors, safe from a model-wide `.to(dtype)`.)
- Q8: blocks of 32 along K, int8 q with a float16 scale d per row and block (w ~ d*q); 8.5 bits a weight.
Both interleave output rows in groups of 16 (N is padded to a multiple of 16).
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

QK = 32           # weights and activations per quantization block along K
GROUP_ROWS = 16   # output rows interleaved together (one per int32 lane of an AVX-512 register)
_PACK_CHUNK_ROWS = 8192  # rows packed at a time, to bound the float temporaries for a 150k-row lm_head

_REQUIRED_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")

_lock = threading.Lock()
_ext: Any = None
_error: str | None = None
_tried = False


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _load() -> Any:
    """The compiled extension, building it on first call; None (with the reason kept) where impossible."""
    global _ext, _error, _tried
    with _lock:
        if _tried:
            return _ext
        _tried = True
        if os.environ.get("LUCID_NO_KERNELS"):
            _error = "disabled by LUCID_NO_KERNELS"
        elif platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
            _error = f"needs Linux on x86-64, this is {platform.system()} on {platform.machine()}"
        elif missing := [f for f in _REQUIRED_FLAGS if f not in _cpu_flags()]:
            _error = f"CPU lacks {', '.join(missing)}"
        else:
            try:
                from lucid.kernels.build import load_extension

                _ext = load_extension(_cpu_flags())
            except Exception as exc:  # compiler missing, build error: lucid must still run on PyTorch's kernels
                _error = f"could not build the kernels: {type(exc).__name__}: {str(exc).strip()[-500:]}"
        if _error:
            log.warning("lucid kernels unavailable, using PyTorch's quantized kernels: %s", _error)
        return _ext


def available() -> bool:
    """Whether the fast kernels can run here (builds them on first call)."""
    return _load() is not None


def unavailable_reason() -> str | None:
    _load()
    return _error


def ext() -> Any:
    """The compiled module; raises RuntimeError with the reason where unavailable."""
    mod = _ext or _load()  # no lock on the hot path once loaded
    if mod is None:
        raise RuntimeError(f"lucid kernels unavailable: {_error}")
    return mod


# ---- packing (pure PyTorch, once at load time) ----------------------------------------------------------------

def _check_shape(weight: torch.Tensor) -> tuple[int, int]:
    if weight.dim() != 2 or weight.shape[1] % QK:
        raise ValueError(f"need a 2-D weight with in_features divisible by {QK}, got {tuple(weight.shape)}")
    return weight.shape[0], weight.shape[1]


def _row_chunks(weight: torch.Tensor):
    """Row slices of the weight as float32, each padded with zero rows to a multiple of GROUP_ROWS."""
    n = weight.shape[0]
    for start in range(0, n, _PACK_CHUNK_ROWS):
        w = weight[start:start + _PACK_CHUNK_ROWS].float()
        pad = -w.shape[0] % GROUP_ROWS
        if pad:
            w = torch.cat([w, w.new_zeros(pad, w.shape[1])])
        yield w


def _interleave_scales(s: torch.Tensor) -> torch.Tensor:
    """(rows, B) float16 per-block values -> (G, B, 16) in the order the kernel reads them, as int16 bits.

    int16, not float16: a model-wide `.to(dtype)` converts floating-point buffers and would corrupt them."""
    rows, blocks = s.shape
    return s.view(rows // GROUP_ROWS, GROUP_ROWS, blocks).permute(0, 2, 1).contiguous().view(torch.int16)


def pack_q4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, K) float weight -> (qs uint8 (G, B, 256), d (G, B, 16), m (G, B, 16)); w ~ d*q + m, d and m from each
    block's min..max. d and m are float16 values stored as int16 bits (`.view(torch.float16)` reads them)."""
    _check_shape(weight)
    parts = []
    for w in _row_chunks(weight):
        rows, k = w.shape
        blocks = w.view(rows, k // QK, QK)
        low, high = blocks.amin(dim=-1), blocks.amax(dim=-1)                          # (rows, B)
        # Round d and m to float16 first and quantize against the rounded values the kernel will use.
        d = ((high - low) / 15.0).half()
        m = low.half()
        d_f = d.float().clamp(min=1e-12)
        q = ((blocks - m.float()[..., None]) / d_f[..., None]).round().clamp(0, 15).to(torch.uint8)
        parts.append(_layout_q4(q.view(rows, k), d, m))
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


def pack_q4_codes(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights that are 4-bit already (a GGUF's Q4_0 / Q4_1 / Q4_K blocks): levels q uint8 (N, K) in 0..15, float16
    d and m (N, K/32) with w = d*q + m, packed as `pack_q4` packs, without rounding anything again."""
    n, k = _check_shape(q)
    if d.shape != (n, k // QK) or m.shape != d.shape or q.dtype != torch.uint8 or int(q.max()) > 15:
        raise ValueError(f"need levels 0..15 (N, K) uint8 and (N, K/32) scales and mins, got {tuple(q.shape)} "
                         f"{q.dtype}, {tuple(d.shape)}, {tuple(m.shape)}")
    pad = -n % GROUP_ROWS
    if pad:
        q = torch.cat([q, q.new_zeros(pad, k)])
        d, m = (torch.cat([x.half(), x.new_zeros(pad, k // QK, dtype=torch.float16)]) for x in (d, m))
    return _layout_q4(q, d.half(), m.half())


def _layout_q4(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Levels (rows, K) uint8, float16 d and m (rows, B), rows a multiple of GROUP_ROWS -> the kernel's layout."""
    rows, k = q.shape
    # Byte (i*64 + r*4 + t) of a (group, block): low nibble k = 4i+t, high nibble k = 16+4i+t, row r.
    q = q.view(rows // GROUP_ROWS, GROUP_ROWS, k // QK, 2, 4, 4).permute(0, 2, 3, 4, 1, 5)  # (G, B, h, i, r, t)
    packed = q[:, :, 0] | (q[:, :, 1] << 4)                                            # (G, B, i, r, t)
    return packed.reshape(rows // GROUP_ROWS, k // QK, 256), _interleave_scales(d), _interleave_scales(m)


def pack_q8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float weight -> (qs uint8 (G, B, 512) holding q + 128, d (G, B, 16) float16 bits as int16); w ~ d*q."""
    _check_shape(weight)
    qs_parts, d_parts = [], []
    for w in _row_chunks(weight):
        rows, k = w.shape
        blocks = w.view(rows, k // QK, QK)
        d = (blocks.abs().amax(dim=-1) / 127.0).half()
        d_f = d.float().clamp(min=1e-12)
        q = (blocks / d_f[..., None]).round().clamp(-127, 127).to(torch.int16) + 128  # unsigned for vpdpbusd
        # Byte (j*64 + r*4 + t) of a (group, block) is row r, k = 4j+t.
        q = q.to(torch.uint8).view(rows // GROUP_ROWS, GROUP_ROWS, k // QK, 8, 4).permute(0, 2, 3, 1, 4)
        qs_parts.append(q.reshape(rows // GROUP_ROWS, k // QK, 512))
        d_parts.append(_interleave_scales(d))
    return torch.cat(qs_parts), torch.cat(d_parts)


# ---- thin wrappers over the extension ---------------------------------------------------------------------------

def q4_gemm(x: torch.Tensor, qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor, n: int,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) -> (..., n) in x's dtype (float32 and bfloat16 run natively); bias (n,) or None."""
    return ext().q4_gemm(x, qs, d, m, bias, n)


def q8_gemm(x: torch.Tensor, qs: torch.Tensor, d: torch.Tensor, n: int,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    return ext().q8_gemm(x, qs, d, bias, n)


def q4_dequantize(qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor, n: int) -> torch.Tensor:
    """The packed weight as a bfloat16 (n, K) matrix."""
    return ext().q4_dequantize(qs, d, m, n, qs.shape[1] * QK)


def q8_dequantize(qs: torch.Tensor, d: torch.Tensor, n: int) -> torch.Tensor:
    return ext().q8_dequantize(qs, d, n, qs.shape[1] * QK)
