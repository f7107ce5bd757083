"""Swap a loaded model's nn.Linear layers for weight-only quantized ones, per a named scheme."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from lucid.config import QUANTIZATION_SCHEMES as SCHEMES
from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.fusion import FUSED_PARTS
from lucid.layers.quantized_embedding import BUFFER_NAMES, Q8Embedding
from lucid.layers.quantized_linear import Int4Linear, Int8Linear
from lucid.loader.gguf_q4 import CARRIED_TYPES, Q4Codes
from lucid.models.base import CausalLM
from lucid.models.registry import model_class_for

GATE_UP_LAYERS = CausalLM.mixed_int4_layers

# GGUF storage types of at most ~5.5 bits a weight. Under `auto` a matrix the file stores this narrow becomes lucid
# int4 (5 bits a weight), a wider one (Q6_K, Q8_0, float) int8: the bits a file's author chose per tensor (llama.cpp's
# Q4_K_M keeps half the ffn_down and attn_v matrices in Q6_K/Q8_0) set the budget, as they do in llama.cpp.
NARROW_GGUF_TYPES = frozenset({"Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q3_K", "Q2_K", "IQ4_NL", "IQ4_XS",
                               "IQ3_S", "IQ3_XXS", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0"})
WIDE_GGUF_TYPES = frozenset({"Q6_K", "Q8_0", "Q8_1", "Q8_K"})
# Those whose blocks are lucid's int4 already (w = d*q + m over 32 weights, q in 0..15): they carry over unrounded
# (lucid.loader.gguf_q4), so int4 costs them no quality beyond the file's own.
FOUR_BIT_GGUF_TYPES = CARRIED_TYPES


@dataclass(frozen=True)
class WeightSource:
    """What the checkpoint says about its matrices: how each was stored (GGUF type names, by HF name), and the
    levels of those stored in 4 bits already, which become lucid int4 as they are (lucid.loader.gguf_q4)."""

    stored_formats: Mapping[str, str] = field(default_factory=dict)
    q4_codes: Mapping[str, Q4Codes] = field(default_factory=dict)

    def is_quantized_file(self) -> bool:
        """Whether the file chose bits per tensor (a quantized GGUF), rather than storing floats."""
        return any(f in NARROW_GGUF_TYPES or f in WIDE_GGUF_TYPES for f in self.stored_formats.values())

    def stored_parts(self, name: str) -> list[str]:
        """The checkpoint's weight names that the (possibly fused) linear layer `name` holds."""
        base, _, last = name.rpartition(".")
        prefix = f"{base}." if base else ""
        return [f"{prefix}{part}.weight" for part in FUSED_PARTS.get(last, (last,))]

    def stored_as(self, name: str, types: frozenset[str]) -> bool | None:
        """Whether every part of `name` is stored in one of `types`; None where the file does not say."""
        formats = [self.stored_formats.get(part) for part in self.stored_parts(name)]
        if not self.is_quantized_file() or None in formats:
            return None
        return all(f in types for f in formats)

    def codes(self, name: str) -> Q4Codes | None:
        """The stored 4-bit levels of layer `name` (a fused layer's parts stacked by rows), if all parts have them."""
        parts = [self.q4_codes.get(part) for part in self.stored_parts(name)]
        if not parts or any(p is None for p in parts):
            return None
        return Q4Codes(*(torch.cat(xs) for xs in zip(*parts, strict=True)))


NO_SOURCE = WeightSource()


def layer_format(name: str, scheme: str, int4_layers: tuple[str, ...] = GATE_UP_LAYERS,
                 source: WeightSource = NO_SOURCE) -> str:
    """Which format one linear layer (`name`: its full name in the model) gets.
    `mixed`: int4 for the layers named in `int4_layers` (the family's `CausalLM.mixed_int4_layers`: the MLP's gate/up
    matrices by default) and for matrices the file stores in 4-bit blocks that lucid's int4 holds as they are
    (FOUR_BIT_GGUF_TYPES: Q4_K_M's half of ffn_down), int8 elsewhere (down_proj, attention and lm_head lose the most
    quality when rounded to int4). `auto`: the bits the file stored each matrix in decide (NARROW_GGUF_TYPES: Q5_0
    attention too); a float checkpoint, which says nothing, gets `mixed`."""
    if scheme in ("none", "int8", "int4"):
        return scheme
    if scheme == "auto":
        narrow = source.stored_as(name, NARROW_GGUF_TYPES)
        if narrow is not None:
            return "int4" if narrow else "int8"
        scheme = "mixed"
    if scheme == "mixed":
        four_bit = name.rsplit(".", 1)[-1] in int4_layers or source.stored_as(name, FOUR_BIT_GGUF_TYPES)
        return "int4" if four_bit else "int8"
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


def quantize_model(model: nn.Module, scheme: str, int4_layers: tuple[str, ...] | None = None,
                   source: WeightSource = NO_SOURCE, prefix: str = "") -> nn.Module:
    """Replace every nn.Linear in place (lm_head included; a head tied to the embedding becomes q8 and the
    embedding reads its rows from it) and, given lucid's kernels, keeps an untied embedding as q8 too.
    `int4_layers`: what `mixed` puts in int4 (default: the model's family's `mixed_int4_layers` when `model` is a
    CausalLM, else the MLP's gate/up). `source`: what the checkpoint says of its matrices (`auto` follows it; its
    4-bit levels are packed as they are); `prefix`: `model`'s own name in the whole model (a decoder layer's
    "model.layers.N."), so that layers are looked up there by their full names."""
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
        fmt = layer_format(prefix + name, scheme, int4_layers, source)
        if fmt == "none":
            continue
        bias = None if module.bias is None else module.bias.detach()
        with torch.no_grad():
            new = _int4_from_codes(source.codes(prefix + name), module, bias, dtype) if fmt == "int4" else None
            new = new or layer_classes()[fmt](module.weight.detach(), bias, dtype)
        _replace(model, name, new)
    _quantize_untied_embedding(model, dtype)
    return model


def _int4_from_codes(codes: Q4Codes | None, module: nn.Linear, bias: torch.Tensor | None,
                     dtype: torch.dtype) -> nn.Module | None:
    """An int4 layer holding a GGUF's own 4-bit levels (no second rounding), where it has them and the kernels run."""
    if codes is None or not can_pack() or codes.q.shape != module.weight.shape:
        return None
    from lucid.kernels import pack_q4_codes
    from lucid.kernels.linear import Q4Linear

    return Q4Linear.from_packed(pack_q4_codes(*codes), bias, module.out_features, module.in_features, dtype)


def fuse_and_quantize(model: nn.Module, scheme: str, source: WeightSource = NO_SOURCE) -> nn.Module:
    """The serving transform: fused projections, quantized weights. Layer by layer, so only one layer's float
    copies exist at a time (peak memory stays near the float model's own size)."""
    from lucid.fusion import fuse_projections

    if scheme == "none":
        return model
    for i, layer in enumerate(model.model.layers):
        quantize_model(fuse_projections(layer), scheme, model.mixed_int4_layers, source, prefix=f"model.layers.{i}.")
    return quantize_model(model, scheme, source=source)   # what is left: the lm_head


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
                 source: str = "packed weights", stored_formats: Mapping[str, str] | None = None) -> CausalLM:
    """The fused, quantized model straight from `packed_state` tensors: no float copy of a quantized matrix is
    ever made. `stored_formats`: the checkpoint's (`auto` follows them). Raises ModelLoadError when the tensors do
    not fit the config and scheme."""
    from lucid.fusion import fuse_projections
    from lucid.kernels.linear import Q4Linear, Q8Linear

    classes = {"int4": Q4Linear, "int8": Q8Linear}
    with torch.device("meta"):
        model = fuse_projections(model_class_for(config)(config))
    embed = model.model.embed_tokens
    weights = WeightSource(stored_formats or {})
    try:
        for name, module in list(model.named_modules()):
            if not isinstance(module, nn.Linear):
                continue
            tied = module.weight is embed.weight    # a tied head is q8, the embedding reads its rows
            fmt = "int8" if tied else layer_format(name, scheme, model.mixed_int4_layers, weights)
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
