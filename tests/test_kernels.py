"""lucid's Q4/Q8 VNNI kernels (lucid/kernels) against float references built from the packed weights.

Three levels of reference:
- exact: the same per-32-block int8 activation quantization done in PyTorch, times the dequantized weights;
  the kernel must match it up to float32 summation order (tight tolerance);
- float activations: the error added by quantizing activations must stay well below the weight rounding error;
- the prefill path (M >= PREFILL_ROWS) is F.linear on the bf16-dequantized weights.
Skipped (with the reason) where the CPU lacks AVX-512 VNNI or the extension cannot be built.
"""

from __future__ import annotations

import pytest
import torch

from lucid import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason=f"lucid kernels: {kernels.unavailable_reason()}")

QK, R = kernels.QK, kernels.GROUP_ROWS


# ---- independent unpacking of the packed formats ---------------------------------------------------------------

def unpack_q4(qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor, n: int) -> torch.Tensor:
    g, b, _ = qs.shape
    by = qs.view(g, b, 4, R, 4)                                          # (G, B, i, r, t)
    q = torch.stack([by & 0x0F, by >> 4], dim=2)                          # (G, B, h, i, r, t): k = 16h + 4i + t
    q = q.permute(0, 4, 1, 2, 3, 5).reshape(g * R, b, QK).float()         # (G, r, B, h, i, t) -> (rows, B, 32)
    d = d.view(torch.float16).permute(0, 2, 1).reshape(g * R, b, 1).float()
    m = m.view(torch.float16).permute(0, 2, 1).reshape(g * R, b, 1).float()
    return (d * q + m).reshape(g * R, b * QK)[:n]


def unpack_q8(qs: torch.Tensor, d: torch.Tensor, n: int) -> torch.Tensor:
    g, b, _ = qs.shape
    q = qs.view(g, b, 8, R, 4).permute(0, 3, 1, 2, 4).reshape(g * R, b, QK).float() - 128  # k = 4j + t
    d = d.view(torch.float16).permute(0, 2, 1).reshape(g * R, b, 1).float()
    return (d * q).reshape(g * R, b * QK)[:n]


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's activation quantization in PyTorch: per block of 32, xq = round(x * 127 / amax)."""
    blocks = x.float().view(x.shape[0], -1, QK)
    amax = blocks.abs().amax(dim=-1, keepdim=True)
    # torch.full_like(...) / amax: a true division as in C++ (127.0 / tensor is reciprocal-then-multiply).
    inv = torch.where(amax > 0, torch.full_like(amax, 127.0) / amax, torch.zeros_like(amax))
    xq = (blocks * inv).round()
    return xq, amax / 127.0                                               # (M, B, 32), (M, B, 1)


def exact_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum over blocks of dx_b * (xq_b . w_b), in float64."""
    xq, dx = quantize_activations(x)
    wb = w.double().view(w.shape[0], -1, QK)                               # (N, B, 32)
    return torch.einsum("mbk,nbk,mb->mn", xq.double(), wb, dx[..., 0].double())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def make_weight(n: int, k: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen) * 0.02
    w[:, 5] *= 8  # an outlier column, as real weights have
    return w


FORMATS = {
    "q4": (kernels.pack_q4, lambda p, n: unpack_q4(*p, n), lambda x, p, n, b: kernels.q4_gemm(x, *p, n, b),
           lambda p, n: kernels.q4_dequantize(*p, n)),
    "q8": (kernels.pack_q8, lambda p, n: unpack_q8(*p, n), lambda x, p, n, b: kernels.q8_gemm(x, *p, n, b),
           lambda p, n: kernels.q8_dequantize(*p, n)),
}


# ---- packing --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n,k", [(128, 896), (100, 96), (1152, 4864)])
def test_pack_roundtrip_within_half_step(fmt, n, k):
    pack, unpack, _, dequant = FORMATS[fmt]
    w = make_weight(n, k)
    packed = pack(w)
    assert packed[0].shape == (-(-n // R), k // QK, 256 if fmt == "q4" else 512)
    wd = unpack(packed, n)
    step = packed[1].view(torch.float16).permute(0, 2, 1).reshape(-1, k // QK).float()[:n].repeat_interleave(QK, dim=1)
    # Rounding to the nearest level: at most half a step off (plus float16 rounding of d and m).
    assert ((wd - w).abs() <= step * 0.5 + 1e-3 * w.abs().amax()).all()
    # The C++ dequantization (prefill path) agrees with this unpacking up to bf16 rounding.
    torch.testing.assert_close(dequant(packed, n).float(), wd, rtol=1e-2, atol=1e-6)


def test_pack_rejects_k_not_multiple_of_32():
    with pytest.raises(ValueError, match="divisible by 32"):
        kernels.pack_q4(torch.randn(16, 48))


def test_q8_keeps_zero_and_constant_blocks():
    w = torch.zeros(16, 64)
    w[:, 32:] = 0.5
    for wd in (unpack_q8(*kernels.pack_q8(w), 16), unpack_q4(*kernels.pack_q4(w), 16)):
        assert torch.equal(wd[:, :32], w[:, :32])                  # zero blocks stay exactly zero
        torch.testing.assert_close(wd, w, rtol=1e-3, atol=0)       # float16 scales: close, not exact


# ---- the matmul kernels ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n,k", [(128, 896), (1152, 896), (9728, 896), (896, 4864), (100, 96)])
@pytest.mark.parametrize("m", [1, 3, 16])
def test_gemm_matches_exact_reference_fp32(fmt, n, k, m):
    pack, unpack, gemm, _ = FORMATS[fmt]
    w = make_weight(n, k)
    packed = pack(w)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1))
    y = gemm(x, packed, n, None)
    assert y.shape == (m, n) and y.dtype == torch.float32
    ref = exact_reference(x, unpack(packed, n))
    assert rel(y, ref) < 2e-6  # only float32 summation order differs


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 16])
def test_gemm_bf16_with_bias(fmt, m):
    pack, unpack, gemm, _ = FORMATS[fmt]
    n, k = 1152, 896
    w = make_weight(n, k)
    packed = pack(w)
    bias = torch.randn(n)
    x = torch.randn(m, k).bfloat16()
    y = gemm(x, packed, n, bias)
    assert y.dtype == torch.bfloat16
    ref = exact_reference(x, unpack(packed, n)) + bias.double()
    assert rel(y, ref) < 5e-3  # bf16 output rounding


def test_gemm_lm_head_sized_n():
    """Many row groups (the 151936-row lm_head), split over threads; a short K keeps it quick."""
    n, k = 151936, 64
    w = make_weight(n, k)
    packed = kernels.pack_q4(w)
    x = torch.randn(2, k)
    ref = exact_reference(x, unpack_q4(*packed, n))
    assert rel(kernels.q4_gemm(x, *packed, n), ref) < 2e-6


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n,k", [(1152, 896), (896, 4864)])
def test_activation_rounding_is_small_next_to_weight_rounding(fmt, n, k):
    pack, unpack, gemm, _ = FORMATS[fmt]
    w = make_weight(n, k)
    packed = pack(w)
    wd = unpack(packed, n)
    x = torch.randn(4, k, generator=torch.Generator().manual_seed(2))
    x[:, 7] *= 20  # an activation outlier: only its own block of 32 pays for it
    y = gemm(x, packed, n, None)
    act_err = rel(y, x.double() @ wd.double().t())              # what activation int8 rounding adds
    weight_err = rel(x.double() @ wd.double().t(), x.double() @ w.double().t())
    assert act_err < 1e-2
    if fmt == "q4":
        assert act_err < 0.2 * weight_err
    else:  # q8 x int8 activations: both roundings are int8 over blocks of 32, so they are alike
        assert act_err < 3 * weight_err


# ---- the layers ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def layer_classes():
    from lucid.kernels.linear import Q4Linear, Q8Linear
    return {"q4": Q4Linear, "q8": Q8Linear}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("m", [1, 3, 16, 64])
@pytest.mark.parametrize("prefill_rows", [None, 32])
def test_layer_forward(layer_classes, fmt, dtype, m, prefill_rows, monkeypatch):
    from lucid.kernels import linear
    monkeypatch.setattr(linear, "PREFILL_ROWS", prefill_rows)
    n, k = 1152, 896
    w = make_weight(n, k)
    bias = torch.randn(n) * 0.1
    layer = layer_classes[fmt](w, bias, dtype)
    x = torch.randn(2, m, k).to(dtype)                         # any leading shape
    y = layer(x)
    assert y.shape == (2, m, n) and y.dtype == dtype
    wd = layer.dequantized()
    ref = x.double() @ wd.double().t() + bias.to(dtype).double()
    tol = 1e-2  # activation int8 rounding (~5e-3 on Gaussian inputs) or bf16 weights (fallback)
    assert rel(y, ref) < tol
    assert f"out_features={n}" in repr(layer) and fmt in repr(layer)


def test_layer_state_dict_and_inference_mode(layer_classes):
    layer = layer_classes["q4"](make_weight(128, 896), None, torch.bfloat16)
    assert set(layer.state_dict()) == {"qweight", "scales", "mins"}
    with torch.inference_mode():
        assert layer(torch.randn(1, 896, dtype=torch.bfloat16)).shape == (1, 128)


def test_unavailable_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setattr(kernels, "_ext", None)
    monkeypatch.setattr(kernels, "_error", None)
    monkeypatch.setenv("LUCID_NO_KERNELS", "1")
    assert not kernels.available()
    assert "LUCID_NO_KERNELS" in kernels.unavailable_reason()
    with pytest.raises(RuntimeError, match="unavailable"):
        kernels.ext()


def test_layer_survives_model_wide_dtype_cast_and_float16_input(layer_classes):
    n, k = 128, 896
    w = make_weight(n, k)
    layer = layer_classes["q4"](w, torch.randn(n), torch.float32)
    x = torch.randn(3, k)
    before = layer(x)
    layer.to(torch.bfloat16)                          # casts floating-point buffers: the packed ones are not
    assert layer.scales.dtype == torch.int16 and layer.qweight.dtype == torch.uint8
    torch.testing.assert_close(layer(x), before, rtol=1e-2, atol=1e-2)
    y16 = layer(x.half())
    assert y16.dtype == torch.float16 and rel(y16, before) < 1e-2
