"""The glass box for one step of `lucid trace`: probe the position that chose the token (standalone, with its own
small KV pool), then read the lens and/or the attention."""

from __future__ import annotations

from typing import Any

import torch

from lucid.glassbox.attention import AttentionView, read_attention
from lucid.glassbox.lens import Lens, read_lens
from lucid.glassbox.standalone import probe_sequence


def explain_step(model: torch.nn.Module, tokenizer: Any, context_ids: list[int], token_id: int, lens: bool,
                 attention: bool) -> tuple[Lens | None, AttentionView | None]:
    """`context_ids` are the tokens before the chosen `token_id` (the last of them is the probed query)."""
    probe = probe_sequence(model, context_ids)
    got_lens = read_lens(model, tokenizer, probe.residuals, token_id, len(context_ids)) if lens else None
    got_attention = None
    if attention:
        tokens = [tokenizer.token_text(t) for t in context_ids]
        got_attention = read_attention(probe.attention, tokens, model.config.num_key_value_heads)
    return got_lens, got_attention
