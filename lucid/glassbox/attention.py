"""Where a query looked: its attention weights over earlier positions, per layer, averaged over heads and per head
(heads listed by the KV head they share under grouped-query attention), with the strongest sources."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass
class Source:
    position: int
    text: str
    weight: float


@dataclass
class LayerAttention:
    layer: int                    # 1-based, as the lens labels layers
    mean: list[float]             # (P + 1,) averaged over heads
    heads: list[list[float]]      # (heads, P + 1), head h shares KV head h // group
    top: list[Source]             # strongest sources of the head average


@dataclass
class AttentionView:
    position: int                 # the query's position P (it predicted the token at P + 1)
    tokens: list[str]             # the text of positions 0..P
    num_kv_heads: int
    group: int                    # query heads per KV head
    layers: list[LayerAttention]
    top: list[Source]             # strongest sources averaged over every layer and head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _top_sources(weights: torch.Tensor, tokens: list[str], k: int) -> list[Source]:
    values, positions = weights.topk(min(k, weights.shape[-1]))
    return [Source(int(p), tokens[int(p)], float(v)) for v, p in zip(values.tolist(), positions.tolist(),
                                                                      strict=True)]


def read_attention(attention: torch.Tensor, tokens: list[str], num_kv_heads: int, top: int = 5,
                   digits: int = 5) -> AttentionView:
    """`attention` (layers, heads, P + 1) from a probe -> the view; weights rounded to `digits` for transport."""
    layers, heads, length = attention.shape
    mean = attention.mean(dim=1)                                               # (layers, P + 1)
    rows = [LayerAttention(layer=i + 1, mean=[round(w, digits) for w in mean[i].tolist()],
                           heads=[[round(w, digits) for w in head] for head in attention[i].tolist()],
                           top=_top_sources(mean[i], tokens, top)) for i in range(layers)]
    return AttentionView(position=length - 1, tokens=tokens, num_kv_heads=num_kv_heads, group=heads // num_kv_heads,
                         layers=rows, top=_top_sources(mean.mean(dim=0), tokens, top))
