"""Everything `lucid inspect` shows, gathered as plain data (rendering lives in render.py, JSON is `to_dict`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from lucid.config import ModelConfig
from lucid.inspect.params import ParamReport, count_parameters
from lucid.inspect.sizes import (
    StoredFormat,
    bytes_by_dtype,
    dtype_label,
    kv_bytes_per_token,
    loaded_bytes,
    stored_sizes,
)
from lucid.inspect.tree import TreeNode, build_tree, tree_lines


@dataclass
class InspectReport:
    name: str
    source: str                        # "weights" or "config (meta device, no weights)"
    config: ModelConfig
    tree: TreeNode
    params: ParamReport
    dtype: str                         # the dtype the numbers of `loaded_bytes` and KV bytes are for
    loaded_bytes: int
    bytes_by_dtype: dict[str, int]
    stored: list[StoredFormat] = field(default_factory=list)
    kv_bytes_per_token: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def stored_bytes(self) -> int:
        return sum(s.bytes for s in self.stored)

    def to_dict(self) -> dict[str, Any]:
        p = self.params
        return {
            "name": self.name,
            "source": self.source,
            "config": asdict(self.config),
            "tree": self.tree.to_dict(),
            "tree_text": tree_lines(self.tree),
            "parameters": {
                "per_layer": p.per_layer,
                "num_layers": p.num_layers,
                "layers": p.layers_total,
                "total": p.total,
                "tied_lm_head": p.tied_head,
                "layer_parts": [asdict(x) for x in p.layer_parts],
                "other_parts": [asdict(x) for x in p.other_parts],
            },
            "dtype": self.dtype,
            "loaded_bytes": self.loaded_bytes,
            "bytes_by_dtype": self.bytes_by_dtype,
            "stored": [asdict(s) | {"bits_per_weight": round(s.bits_per_weight, 3)} for s in self.stored],
            "stored_bytes": self.stored_bytes,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "notes": self.notes,
        }


def meta_model(config: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """The model's structure with no memory behind it: shapes and counts without loading any weights."""
    from lucid.models.registry import model_class_for

    with torch.device("meta"):
        return model_class_for(config)(config).to(dtype)


def inspect_model(model: nn.Module, config: ModelConfig, name: str, stored_formats: Mapping[str, str] | None = None,
                  dtype: torch.dtype | None = None, from_config: bool = False) -> InspectReport:
    """Gather the tree, counts and sizes of a built model (on any device, the meta device included)."""
    params = count_parameters(model)
    dtype = dtype or next(model.parameters()).dtype
    report = InspectReport(
        name=name,
        source="config (meta device, no weights)" if from_config else "weights",
        config=config,
        tree=build_tree(model, tied=params.shared),
        params=params,
        dtype=dtype_label(dtype),
        loaded_bytes=loaded_bytes(model),
        bytes_by_dtype=bytes_by_dtype(params.total),
        stored=stored_sizes(model, stored_formats or {}),
        kv_bytes_per_token=kv_bytes_per_token(config, dtype),
    )
    report.notes = _notes(report, stored_formats or {})
    return report


def _notes(report: InspectReport, stored_formats: Mapping[str, str]) -> list[str]:
    notes = []
    p = report.params
    head = next((x for x in p.other_parts if x.name == "lm_head"), None)
    if p.tied_head:
        notes.append("lm_head shares its weight with model.embed_tokens (tie_word_embeddings): counted once.")
    elif head is not None:
        head.note = "its own matrix (untied)"
        where = "this file stores lm_head separately" if "lm_head.weight" in stored_formats else "lm_head is untied"
        notes.append(f"{where} (not tied to embed_tokens): it adds {head.count:,} parameters; with a tied head "
                     f"the same shapes would have {p.total - head.count:,}.")
    return notes
