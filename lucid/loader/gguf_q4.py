"""A GGUF's 4-bit matrices as lucid's Q4 levels, unrounded: Q4_0, Q4_1 and Q4_K blocks are all w = d*q + m over
blocks of 32 with q in 0..15, which is lucid's Q4 layout (lucid.kernels.pack_q4_codes), so they carry over as stored
instead of being dequantized and rounded to a second 4-bit grid (that double rounding costs quality for nothing).

Q4_K's sub-block scale and min are products of a float16 super-block value and a 6-bit code; lucid keeps each
product as one float16 (an error of at most 2^-11 of the scale, 4x finer than the bfloat16 rounding of the float
weights). Everything else (Q5_0, Q6_K, Q8_0 ...) is left to the float path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from lucid.config import ModelConfig
from lucid.loader.names import gguf_to_hf

log = logging.getLogger(__name__)

QK = 32


class Q4Codes(NamedTuple):
    """w = d*q + m per block of 32 along K: q uint8 (N, K) in 0..15, d and m float16 (N, K/32)."""

    q: torch.Tensor
    d: torch.Tensor
    m: torch.Tensor

    def dequantized(self) -> torch.Tensor:
        n, k = self.q.shape
        w = self.d.float()[..., None] * self.q.view(n, k // QK, QK).float() + self.m.float()[..., None]
        return w.view(n, k)


def _q4_0(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nb, 18) bytes: float16 d, 16 bytes of nibbles (low: values 0..15, high: 16..31); w = d*(q - 8)."""
    d = blocks[:, :2].copy().view(np.float16)[:, 0]
    qs = blocks[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1)                    # (nb, 32)
    return q, d, (d.astype(np.float32) * -8).astype(np.float16)          # -8 d: exact in float16


def _q4_1(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nb, 20) bytes: float16 d, float16 m, 16 bytes of nibbles; w = d*q + m."""
    d = blocks[:, :2].copy().view(np.float16)[:, 0]
    m = blocks[:, 2:4].copy().view(np.float16)[:, 0]
    qs = blocks[:, 4:]
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1), d, m


def _q4_k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nb, 144) bytes per super-block of 256: float16 d and dmin, 12 bytes of 6-bit codes, 128 bytes of nibbles
    (32 bytes per 64 values: low nibbles the first 32, high the next); sub-block j: w = d*sc_j*q - dmin*mc_j."""
    from gguf.quants import Q4_K

    nb = blocks.shape[0]
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)       # (nb, 1)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, mc = Q4_K.get_scale_min(blocks[:, 4:16].copy())                  # (nb, 8) each
    qs = blocks[:, 16:].reshape(nb, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    q = (qs & 0x0F).reshape(nb * 8, QK)                                  # (nb, 4 chunks, 2 nibbles, 32) -> sub-blocks
    sub_d = (d * sc.astype(np.float32)).astype(np.float16).reshape(-1)
    sub_m = (-dmin * mc.astype(np.float32)).astype(np.float16).reshape(-1)
    return q, sub_d, sub_m


_DECODERS = {"Q4_0": (18, 32, _q4_0), "Q4_1": (20, 32, _q4_1), "Q4_K": (144, 256, _q4_k)}
CARRIED_TYPES = frozenset(_DECODERS)


def decode_q4_blocks(type_name: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A GGUF tensor's raw bytes (any shape, whole blocks of `type_name`) -> levels uint8 (n, 32), float16 d and m
    (n,), one row per block of 32 in storage order."""
    block_bytes, _, decode = _DECODERS[type_name]
    return decode(np.asarray(raw).view(np.uint8).reshape(-1, block_bytes))


def read_q4_codes(path: Path, config: ModelConfig, floats: Mapping[str, torch.Tensor]) -> dict[str, Q4Codes]:
    """The levels of every 4-bit matrix of the GGUF at `path`, by HF name, in torch's layout (the family's row
    fix-ups applied). Each is checked against `floats` (the same tensors dequantized by the gguf package): a
    matrix whose levels do not reproduce it is left out, to be quantized from its float weights instead."""
    from lucid.loader.gguf_file import open_gguf
    from lucid.models.registry import family_for_gguf

    reader = open_gguf(path)
    arch_field = reader.fields.get("general.architecture")
    family = family_for_gguf(arch_field.contents() if arch_field else None, str(path))
    codes: dict[str, Q4Codes] = {}
    for t in reader.tensors:
        decoder = _DECODERS.get(t.tensor_type.name)
        name = gguf_to_hf(t.name, family.gguf_architecture)
        if decoder is None or name is None or name not in floats or floats[name].dim() != 2:
            continue
        n, k = floats[name].shape
        if k % decoder[1]:
            continue
        q, d, m = decode_q4_blocks(t.tensor_type.name, t.data)
        q = torch.from_numpy(np.ascontiguousarray(q).reshape(n, k))
        d = torch.from_numpy(np.ascontiguousarray(d).reshape(n, k // QK))
        m = torch.from_numpy(np.ascontiguousarray(m).reshape(n, k // QK))
        # Row fix-ups (Llama's q/k order) move whole rows: the same on levels, scales and mins.
        fixed = Q4Codes(*(family.gguf_to_hf_tensor(name, x, config) for x in (q, d, m)))
        reference = floats[name].float()
        if not torch.allclose(fixed.dequantized(), reference, rtol=2e-2, atol=1e-3 * float(reference.abs().amax())):
            log.warning("%s: %s's 4-bit levels do not reproduce its weights; quantizing it from floats", path, name)
            continue
        codes[name] = fixed
    return codes
