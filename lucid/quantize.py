"""Swap a loaded model's nn.Linear layers for weight-only quantized ones, per a named scheme."""

from __future__ import annotations

import torch
from torch import nn

from lucid.config import QUANTIZATION_SCHEMES as SCHEMES
from lucid.layers.quantized_linear import Int4Linear, Int8Linear

GATE_UP_LAYERS = ("gate_proj", "up_proj", "gate_up_proj")


def layer_format(name: str, scheme: str) -> str:
    """Which format one linear layer gets. `mixed`: int4 for the MLP's gate/up matrices, int8 elsewhere
    (down_proj, attention and lm_head lose the most quality in int4)."""
    if scheme in ("none", "int8", "int4"):
        return scheme
    if scheme == "mixed":
        return "int4" if name.rsplit(".", 1)[-1] in GATE_UP_LAYERS else "int8"
    raise ValueError(f"unknown quantization {scheme!r}; choose one of {', '.join(SCHEMES)}")


def layer_classes() -> dict[str, type[nn.Module]]:
    """lucid's own AVX-512 VNNI kernels where this CPU has them (about 1.5-2.5x faster per token);
    PyTorch's int4/int8 CPU kernels elsewhere. LUCID_NO_KERNELS=1 forces PyTorch's."""
    from lucid import kernels

    if kernels.available():
        from lucid.kernels.linear import Q4Linear, Q8Linear

        return {"int4": Q4Linear, "int8": Q8Linear}
    return {"int4": Int4Linear, "int8": Int8Linear}


def quantize_model(model: nn.Module, scheme: str) -> nn.Module:
    """Replace every nn.Linear (lm_head included, unless it shares the embedding) in place."""
    if scheme == "none":
        return model
    dtype = next(model.parameters()).dtype
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("quantized kernels are CPU-only in lucid; use --quantization none on CUDA")
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        if embed is not None and module.weight is embed.weight:
            continue  # a tied head shares the embedding table, which must stay float for lookups
        fmt = layer_format(name, scheme)
        if fmt == "none":
            continue
        cls = layer_classes()[fmt]
        with torch.no_grad():
            new = cls(module.weight.detach(), None if module.bias is None else module.bias.detach(), dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def fuse_and_quantize(model: nn.Module, scheme: str) -> nn.Module:
    """The serving transform: fused projections, quantized weights. Layer by layer, so only one layer's float
    copies exist at a time (peak memory stays near the float model's own size)."""
    from lucid.fusion import fuse_projections

    if scheme == "none":
        return model
    for layer in model.model.layers:
        quantize_model(fuse_projections(layer), scheme)
    return quantize_model(model, scheme)   # what is left: the lm_head
