"""What the glass box reads from one forward pass, for its last position P: the residual stream after the embedding
and after every layer, and P's query after the rotary embedding in every layer.

Two sources, one per step path: the fused C++ step taps its row itself (`FusedDecoder.forward_tapped`, through
`ModelRunner.fused_forward_tapped`), and the eager model (`model.model(ids, positions, meta)`) is read with forward
hooks. Either way it is the engine's own forward over its own KV pool, so the keys P's query is compared with are
the pool's. The attention weights are then softmax(q · Kᵀ / √head_dim) over the pool's keys of positions 0..P, the
numbers the engine's attention computes before it weights the values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lucid.glassbox.lens import Norm
from lucid.layers.attention_metadata import AttentionMetadata


@dataclass
class Probe:
    residuals: torch.Tensor   # (layers + 1, hidden) float32: after the embedding, then after each decoder layer
    attention: torch.Tensor   # (layers, heads, P + 1) float32: the last position's query over positions 0..P
    norm: Norm | None = None  # the final norm of the forward that made `residuals` (None: the model's own)


@torch.inference_mode()
def attention_over_pool(model: torch.nn.Module, queries: list[torch.Tensor] | torch.Tensor,
                        context_slots: torch.Tensor) -> torch.Tensor:
    """Each layer's query (heads * head_dim,) of P against the pool's keys at `context_slots` (P + 1,): the
    attention weights (layers, heads, P + 1), float32."""
    attention = []
    for layer, q in zip(model.model.layers, queries, strict=True):
        attn = layer.self_attn
        keys = attn.k_cache.index_select(0, context_slots).float()              # (P + 1, kv_heads, head_dim)
        group = attn.num_heads // attn.num_kv_heads
        qg = q.float().view(attn.num_kv_heads, group, attn.head_dim)             # (kv_heads, group, head_dim)
        scores = qg @ keys.permute(1, 2, 0) * attn.head_dim ** -0.5              # (kv_heads, group, P + 1)
        attention.append(scores.softmax(dim=-1).reshape(attn.num_heads, -1))     # (heads, P + 1)
    return torch.stack(attention)


@torch.inference_mode()
def probe_last_position(model: torch.nn.Module, ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                        context_slots: torch.Tensor) -> Probe:
    """Run `ids` (N,) at `positions` (N,) through the eager `model.model` with `meta` (one sequence's chunk or decode
    step whose last token is the probed position P); `context_slots` (P + 1,) are the pool slots of positions 0..P."""
    body = model.model
    residuals: list[torch.Tensor] = []
    queries: list[torch.Tensor] = []
    # The first layer's input is the embedding as the model scales it (Gemma multiplies by sqrt(hidden)).
    hooks = [body.layers[0].register_forward_pre_hook(lambda _m, args: residuals.append(args[0][-1].float()))]
    for layer in body.layers:
        hooks.append(layer.register_forward_hook(lambda _m, _i, out: residuals.append(out[-1].float())))
    # The rotary module is shared by every layer and called once per layer, in order: its output is (q, k).
    rotary = body.layers[0].self_attn.rotary_emb
    hooks.append(rotary.register_forward_hook(lambda _m, _i, out: queries.append(out[0][-1].float())))
    try:
        body(ids, positions, meta)
    finally:
        for hook in hooks:
            hook.remove()
    return Probe(residuals=torch.stack(residuals), attention=attention_over_pool(model, queries, context_slots))
