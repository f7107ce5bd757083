"""Fuse q/k/v and gate/up projections into single matmuls, after loading, for serving.

Checkpoints and the learner's view keep Hugging Face's separate modules; the serving engine fuses them
so each layer runs 4 matmuls instead of 7 (fewer kernel calls, one pass over the activations).
"""

from __future__ import annotations

import torch
from torch import nn

from lucid.layers.attention import Attention
from lucid.layers.mlp import GatedMLP

# A fused projection's name -> the checkpoint's projections it holds, in row order.
FUSED_PARTS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _fused_linear(parts: list[nn.Linear]) -> nn.Linear:
    has_bias = parts[0].bias is not None
    fused = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts), bias=has_bias, device="meta")
    if parts[0].weight.is_meta:
        # A model built to receive packed weights: shapes are all it needs (and a torch.cat of meta tensors
        # goes through torch._refs, whose first use imports torch._dynamo: seconds of every start-up).
        return fused
    weight = torch.cat([p.weight.detach() for p in parts], dim=0)       # (sum of out, in)
    fused.weight = nn.Parameter(weight, requires_grad=False)
    if has_bias:
        fused.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]), requires_grad=False)
    return fused


def fuse_projections(model: nn.Module) -> nn.Module:
    """In place: every attention gets `qkv_proj`, every MLP `gate_up_proj`; the separate modules are dropped."""
    for module in model.modules():
        if isinstance(module, Attention) and module.qkv_proj is None:
            module.qkv_proj = _fused_linear([module.q_proj, module.k_proj, module.v_proj])
            del module.q_proj, module.k_proj, module.v_proj
        elif isinstance(module, GatedMLP) and module.gate_up_proj is None:
            module.gate_up_proj = _fused_linear([module.gate_proj, module.up_proj])
            del module.gate_proj, module.up_proj
    return model
