"""The probe without an engine (for `lucid trace`): a KV pool just big enough for one sequence, bound to the layers
for the duration of one forward, then the layers get their previous pool back."""

from __future__ import annotations

import torch

from lucid.glassbox.probe import Probe, probe_last_position
from lucid.layers.attention_metadata import AttentionMetadata, PrefillChunk


@torch.inference_mode()
def probe_sequence(model: torch.nn.Module, token_ids: list[int]) -> Probe:
    """Probe the last position of `token_ids` (the query that predicts the token after them)."""
    config = model.config
    # The norm's weight, not the embedding's: a quantized embedding (Q8Embedding) has no float `weight`.
    device = model.model.norm.weight.device
    dtype = model.model.norm.weight.dtype
    n = len(token_ids)
    attns = [layer.self_attn for layer in model.model.layers]
    saved = [(a.k_cache, a.v_cache) for a in attns]
    # (layers, n, kv_heads, head_dim): slot i holds position i
    shape = (config.num_hidden_layers, n, config.num_key_value_heads, config.head_dim)
    k_pool = torch.zeros(shape, dtype=dtype, device=device)
    v_pool = torch.zeros(shape, dtype=dtype, device=device)
    slots = torch.arange(n, device=device)
    meta = AttentionMetadata(slot_mapping=slots, prefills=[PrefillChunk(0, n, n, None)])
    try:
        for i, a in enumerate(attns):
            a.k_cache, a.v_cache = k_pool[i], v_pool[i]
        return probe_last_position(model, torch.tensor(token_ids, device=device), slots, meta, slots)
    finally:
        for a, (k, v) in zip(attns, saved, strict=True):
            a.k_cache, a.v_cache = k, v
