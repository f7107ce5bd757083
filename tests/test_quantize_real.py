"""The default model's weights as `-q mixed` / `-q auto` hold them, against the gguf package's dequantization of the
same file: the file's Q4_K matrices are carried into lucid's int4 unrounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_llm

from lucid import kernels

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not kernels.available(), reason=f"lucid kernels: {kernels.unavailable_reason()}")]


def _stored(path, gguf_name: str) -> tuple[str, torch.Tensor]:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    tensor = next(t for t in GGUFReader(str(path)).tensors if t.name == gguf_name)
    weights = np.asarray(dequantize(tensor.data, tensor.tensor_type))
    return tensor.tensor_type.name, torch.from_numpy(weights).view(int(tensor.shape[1]), -1)   # (out, in)


def test_q4_k_down_proj_is_the_files_own_int4_and_q6_k_stays_int8(real_gguf_path):
    from test_kernels import unpack_q4

    from lucid.kernels.linear import Q4Linear, Q8Linear

    layers = shared_llm("bfloat16", "mixed").engine.model.model.layers
    kind, stored = _stored(real_gguf_path, "blk.2.ffn_down.weight")
    assert kind == "Q4_K" and isinstance(layers[2].mlp.down_proj, Q4Linear)
    down = layers[2].mlp.down_proj
    ours = unpack_q4(down.qweight, down.scales, down.mins, down.out_features)       # float32 d*q + m
    # Unrounded: only the float16 products of Q4_K's scale codes differ (2^-11 of a block's scale and min), far
    # below the half step (1/30 of a block's range) that rounding to a second 4-bit grid costs.
    d = down.scales.view(torch.float16).permute(0, 2, 1).reshape(-1, stored.shape[1] // 32).float()[:stored.shape[0]]
    m = down.mins.view(torch.float16).permute(0, 2, 1).reshape(-1, stored.shape[1] // 32).float()[:stored.shape[0]]
    bound = ((15 * d.abs() + m.abs()) * 2.0**-10).repeat_interleave(32, dim=1)
    assert ((ours - stored).abs() <= bound).all()
    kind, _ = _stored(real_gguf_path, "blk.0.ffn_down.weight")
    assert kind == "Q6_K" and isinstance(layers[0].mlp.down_proj, Q8Linear)
    assert sum(isinstance(layer.mlp.down_proj, Q4Linear) for layer in layers) == 12
