"""Exact parameter counts of a model, part by part, with the formula behind each number.

Counting rule (nanoGPT's `get_num_params`): every *unique* Parameter once. A tied lm_head shares the embedding's
Parameter, so it adds nothing; an untied one (the default GGUF stores `output.weight`) adds vocab × hidden.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn


@dataclass
class PartCount:
    """One row of the table: a module, its parameters' shapes as a formula, and their element count."""

    name: str
    formula: str
    count: int
    note: str = ""


@dataclass
class ParamReport:
    """Counts for the whole model. `layer_parts` describe one decoder layer; all layers have the same shapes."""

    layer_parts: list[PartCount]
    per_layer: int
    num_layers: int
    layers_name: str                      # e.g. "model.layers"
    other_parts: list[PartCount]          # embedding, final norm, lm_head (0 when tied)
    total: int
    tied_head: bool
    shared: dict[str, str] = field(default_factory=dict)  # alias name -> the name that owns the Parameter

    @property
    def layers_total(self) -> int:
        return self.per_layer * self.num_layers


def unique_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """name -> Parameter, each Parameter once, under the first name it is reached by."""
    seen: dict[int, str] = {}
    out: dict[str, nn.Parameter] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in seen:
            seen[id(p)] = name
            out[name] = p
    return out


def shared_parameters(model: nn.Module) -> dict[str, str]:
    """Names that reach a Parameter an earlier name owns: {'lm_head.weight': 'model.embed_tokens.weight'}."""
    owner: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in owner:
            aliases[name] = owner[id(p)]
        else:
            owner[id(p)] = name
    return aliases


def count_unique(model: nn.Module) -> int:
    """The number the table must add up to: the sum of numel over unique Parameters."""
    return sum(p.numel() for p in unique_parameters(model).values())


def shape_formula(shapes: list[tuple[int, ...]]) -> str:
    """[(896, 896), (896,)] -> '896×896 + 896'."""
    return " + ".join("×".join(str(d) for d in shape) for shape in shapes) or "0"


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The stack of repeated blocks: the largest ModuleList in the model."""
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ValueError("the model has no ModuleList of layers")
    return max(lists, key=lambda item: len(item[1]))


def _modules_with_own_params(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Modules that hold Parameters directly (Linear, Embedding, RMSNorm ...), in definition order."""
    for name, sub in module.named_modules(prefix=prefix, remove_duplicate=False):
        if any(True for _ in sub.parameters(recurse=False)):
            yield name, sub


def _part(name: str, module: nn.Module) -> PartCount:
    params = list(module.parameters(recurse=False))
    shapes = [tuple(p.shape) for p in params]
    if isinstance(module, nn.Linear):
        # Written in→out as the walk-through does (896×128 + 128); torch stores the weight as (out, in).
        shapes[0] = (module.in_features, module.out_features)
    return PartCount(name, shape_formula(shapes), sum(p.numel() for p in params))


def count_parameters(model: nn.Module) -> ParamReport:
    """Count every part; raises if the table does not add up to the unique-Parameter total (it always should)."""
    layers_name, layers = find_layers(model)
    layer_parts = [_part(name, m) for name, m in _modules_with_own_params(layers[0])]
    per_layer = sum(p.count for p in layer_parts)
    for i, layer in enumerate(layers):
        n = sum(p.numel() for p in layer.parameters())
        if n != per_layer:
            raise ValueError(f"{layers_name}.{i} has {n:,} parameters but layer 0 has {per_layer:,}")

    shared = shared_parameters(model)
    other_parts: list[PartCount] = []
    owned_ids: set[int] = set()
    for name, m in _modules_with_own_params(model):
        if name == layers_name or name.startswith(layers_name + "."):
            continue
        part = _part(name, m)
        own = [p for p in m.parameters(recurse=False) if id(p) not in owned_ids]
        aliased = {f"{name}.{pname}": shared[f"{name}.{pname}"]
                   for pname, _ in m.named_parameters(recurse=False) if f"{name}.{pname}" in shared}
        if aliased:
            # A tied weight: shown with its shape, but counted where it was first defined.
            part.count = sum(p.numel() for p in own)
            part.note = "tied to " + ", ".join(sorted({v.rsplit(".", 1)[0] for v in aliased.values()}))
        owned_ids.update(id(p) for p in m.parameters(recurse=False))
        other_parts.append(part)

    total = per_layer * len(layers) + sum(p.count for p in other_parts)
    expected = count_unique(model)
    if total != expected:
        raise ValueError(f"parameter table adds up to {total:,}, but the model has {expected:,} unique parameters")
    tied = any(name.startswith("lm_head") for name in shared)
    return ParamReport(layer_parts=layer_parts, per_layer=per_layer, num_layers=len(layers), layers_name=layers_name,
                       other_parts=other_parts, total=total, tied_head=tied, shared=shared)
