"""Swap a loaded model's nn.Linear layers for weight-only quantized ones, per a named scheme."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from lucid.config import QUANTIZATION_SCHEMES as SCHEMES
from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.layers.quantized_embedding import BUFFER_NAMES, Q8Embedding
from lucid.layers.quantized_linear import Int4Linear, Int8Linear
from lucid.models.base import CausalLM
from lucid.models.registry import model_class_for

GATE_UP_LAYERS = CausalLM.mixed_int4_layers


def layer_format(name: str, scheme: str, int4_layers: tuple[str, ...] = GATE_UP_LAYERS) -> str:
    """Which format one linear layer gets. `mixed`: int4 for the layers named in `int4_layers` (the family's
    `CausalLM.mixed_int4_layers`: the MLP's gate/up matrices by default), int8 elsewhere (down_proj, attention and
    lm_head lose the most quality in int4)."""
    if scheme in ("none", "int8", "int4"):
        return scheme
    if scheme == "mixed":
        return "int4" if name.rsplit(".", 1)[-1] in int4_layers else "int8"
    raise ValueError(f"unknown quantization {scheme!r}; choose one of {', '.join(SCHEMES)}")


def layer_classes() -> dict[str, type[nn.Module]]:
    """lucid's own AVX-512 VNNI kernels where this CPU has them (about 1.5-2.5x faster per token);
    PyTorch's int4/int8 CPU kernels elsewhere. LUCID_NO_KERNELS=1 forces PyTorch's."""
    from lucid import kernels

    if kernels.available():
        from lucid.kernels.linear import Q4Linear, Q8Linear

        return {"int4": Q4Linear, "int8": Q8Linear}
    return {"int4": Int4Linear, "int8": Int8Linear}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` where the submodule `name` (dotted path) is."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _quantize_tied_head(model: nn.Module, name: str, dtype: torch.dtype) -> None:
    """A head tied to the embedding becomes q8 and the embedding reads its rows from it (one int8 table instead
    of a float one). Only with lucid's kernels: elsewhere the table stays float for lookups."""
    if not can_pack():
        return
    from lucid.kernels.linear import Q8Linear

    embed = model.model.embed_tokens
    with torch.no_grad():
        head = Q8Linear(embed.weight.detach(), None, dtype)
    _replace(model, name, head)
    _replace(model, "model.embed_tokens", Q8Embedding(head, dtype))


def _quantize_untied_embedding(model: nn.Module, dtype: torch.dtype) -> None:
    """An embedding of its own becomes a q8 table (rows dequantized on lookup), as a tied one does with its head.
    Only with lucid's kernels, like the tied case, so the packed-weights cache holds every quantized table."""
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if isinstance(embed, nn.Embedding) and can_pack():
        with torch.no_grad():
            _replace(model, "model.embed_tokens", Q8Embedding.quantize(embed.weight.detach(), dtype))


def quantize_model(model: nn.Module, scheme: str, int4_layers: tuple[str, ...] | None = None) -> nn.Module:
    """Replace every nn.Linear in place (lm_head included; a head tied to the embedding becomes q8 and the
    embedding reads its rows from it) and, given lucid's kernels, keeps an untied embedding as q8 too.
    `int4_layers`: what `mixed` puts in int4 (default: the model's family's `mixed_int4_layers` when `model` is a
    CausalLM, else the MLP's gate/up)."""
    if scheme == "none":
        return model
    dtype = next(model.parameters()).dtype
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("quantized kernels are CPU-only in lucid; use --quantization none on CUDA")
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if int4_layers is None:
        int4_layers = getattr(model, "mixed_int4_layers", GATE_UP_LAYERS)
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        if embed is not None and module.weight is embed.weight:
            _quantize_tied_head(model, name, dtype)
            continue
        fmt = layer_format(name, scheme, int4_layers)
        if fmt == "none":
            continue
        cls = layer_classes()[fmt]
        with torch.no_grad():
            new = cls(module.weight.detach(), None if module.bias is None else module.bias.detach(), dtype)
        _replace(model, name, new)
    _quantize_untied_embedding(model, dtype)
    return model


def fuse_and_quantize(model: nn.Module, scheme: str) -> nn.Module:
    """The serving transform: fused projections, quantized weights. Layer by layer, so only one layer's float
    copies exist at a time (peak memory stays near the float model's own size)."""
    from lucid.fusion import fuse_projections

    if scheme == "none":
        return model
    for layer in model.model.layers:
        quantize_model(fuse_projections(layer), scheme, model.mixed_int4_layers)
    return quantize_model(model, scheme)   # what is left: the lm_head


def can_pack() -> bool:
    """Whether quantized layers are lucid's kernel layers, whose packed tensors the packed-weights cache keeps."""
    from lucid import kernels

    return kernels.available()


def packed_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What `packed_model` rebuilds the model from: its state dict (a tied head once, as the embedding)."""
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return state


def packed_model(config: ModelConfig, tensors: Mapping[str, torch.Tensor], scheme: str, dtype: torch.dtype,
                 source: str = "packed weights") -> CausalLM:
    """The fused, quantized model straight from `packed_state` tensors: no float copy of a quantized matrix is
    ever made. Raises ModelLoadError when the tensors do not fit the config and scheme."""
    from lucid.fusion import fuse_projections
    from lucid.kernels.linear import Q4Linear, Q8Linear

    classes = {"int4": Q4Linear, "int8": Q8Linear}
    with torch.device("meta"):
        model = fuse_projections(model_class_for(config)(config))
    embed = model.model.embed_tokens
    try:
        for name, module in list(model.named_modules()):
            if not isinstance(module, nn.Linear):
                continue
            tied = module.weight is embed.weight    # a tied head is q8, the embedding reads its rows
            fmt = "int8" if tied else layer_format(name, scheme, model.mixed_int4_layers)
            if fmt == "none":
                raise ModelLoadError(f"{source}: scheme {scheme!r} keeps {name} in float; nothing to unpack")
            cls = classes[fmt]
            if f"{name}.mins" in tensors and "mins" not in cls.buffer_names:  # packed by a lucid whose choice differed
                raise ModelLoadError(f"{source}: {name} was packed as int4, the scheme {scheme!r} now wants {fmt}")
            packed = tuple(tensors[f"{name}.{b}"] for b in cls.buffer_names)
            bias = tensors[f"{name}.bias"] if module.bias is not None else None
            new = cls.from_packed(packed, bias, module.out_features, module.in_features, dtype)
            _replace(model, name, new)
            if tied:
                _replace(model, "model.embed_tokens", Q8Embedding(new, dtype))
        if isinstance(model.model.embed_tokens, nn.Embedding):   # untied: its own q8 rows
            rows = model.model.embed_tokens.num_embeddings
            packed = [tensors[f"model.embed_tokens.{b}"] for b in BUFFER_NAMES]
            _replace(model, "model.embed_tokens", Q8Embedding.packed(*packed, rows, dtype))
        floats = {name: nn.Parameter(tensors[name].to(dtype), requires_grad=False)
                  for name, p in model.named_parameters() if p.is_meta}
    except KeyError as exc:
        raise ModelLoadError(f"{source}: tensor {exc.args[0]} is missing") from None
    model.load_state_dict(floats, strict=False, assign=True)
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        raise ModelLoadError(f"{source}: some tensors of the model were not in the packed weights")
    return model.eval()
