"""A GGUF's 4-bit blocks carried into lucid's int4 as they are (lucid.loader.gguf_q4, kernels.pack_q4_codes):
the levels decode to what the gguf package dequantizes, and the packed layer multiplies by exactly those weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from lucid import kernels
from lucid.loader.gguf_q4 import Q4Codes, decode_q4_blocks

QK = 32


def _random_q4_k(super_blocks: int, seed: int = 0) -> np.ndarray:
    """Q4_K super-blocks (144 bytes): random codes and nibbles, finite float16 d and dmin (random bytes there could
    be inf or NaN). gguf's Python cannot quantize to Q4_K, so the blocks are made up directly."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(super_blocks, 144), dtype=np.uint8)
    raw[:, 0:2] = rng.uniform(1e-4, 1e-2, super_blocks).astype(np.float16)[:, None].view(np.uint8)
    raw[:, 2:4] = rng.uniform(1e-4, 1e-2, super_blocks).astype(np.float16)[:, None].view(np.uint8)
    return raw


def _blocks(type_name: str) -> np.ndarray:
    if type_name == "Q4_K":
        return _random_q4_k(12)
    weights = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32) * 0.02
    return quantize(weights, GGMLQuantizationType[type_name])


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q4_K"])
def test_levels_decode_to_the_gguf_packages_weights(type_name):
    raw = _blocks(type_name)
    q, d, m = decode_q4_blocks(type_name, raw)
    assert q.dtype == np.uint8 and q.max() <= 15 and q.shape[1] == QK
    ours = d.astype(np.float32)[:, None] * q.astype(np.float32) + m.astype(np.float32)[:, None]
    reference = dequantize(raw, GGMLQuantizationType[type_name]).reshape(-1, QK)
    if type_name == "Q4_K":
        # d*sc and dmin*mc are kept as one float16 each: within 2^-11 of each product, so of each weight's scale.
        scale = np.abs(d.astype(np.float32))[:, None] * 15 + np.abs(m.astype(np.float32))[:, None]
        assert (np.abs(ours - reference) <= scale * 2.0**-10).all()
        assert not np.array_equal(q, np.zeros_like(q))
    else:
        np.testing.assert_array_equal(ours, reference)   # Q4_0 / Q4_1: the same numbers, exactly


@pytest.mark.skipif(not kernels.available(), reason=f"lucid kernels: {kernels.unavailable_reason()}")
def test_packed_levels_multiply_exactly_as_decoded():
    from test_kernels import exact_reference, rel, unpack_q4

    n, k = 40, 512                       # 40 rows: padded to 48 inside, the padding must not leak out
    q, d, m = decode_q4_blocks("Q4_K", _random_q4_k(n * k // 256, seed=3))
    codes = Q4Codes(torch.from_numpy(q.reshape(n, k)), torch.from_numpy(d.reshape(n, k // QK)),
                    torch.from_numpy(m.reshape(n, k // QK)))
    packed = kernels.pack_q4_codes(*codes)
    assert torch.equal(unpack_q4(*packed, n), codes.dequantized())    # no second rounding anywhere
    x = torch.randn(3, k)
    assert rel(kernels.q4_gemm(x, *packed, n), exact_reference(x, codes.dequantized())) < 1e-5


def test_pack_q4_codes_rejects_levels_past_15():
    q = torch.full((16, 32), 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="0..15"):
        kernels.pack_q4_codes(q, torch.ones(16, 1).half(), torch.zeros(16, 1).half())
