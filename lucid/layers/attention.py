"""Grouped-query self-attention with q/k/v bias, reading and writing K/V through a paged block pool."""

import torch
import torch.nn.functional as F
from torch import nn

from lucid.layers.attention_metadata import AttentionMetadata
from lucid.layers.rotary import RotaryEmbedding


class Qwen2Attention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, rotary_emb: RotaryEmbedding) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)
        # Serving fuses q/k/v into one matmul at load time (lucid.fusion); None keeps the three HF modules.
        self.qkv_proj: nn.Module | None = None
        self.rotary_emb = rotary_emb  # one module shared by all layers (it holds no weights)
        # This layer's slice of the KV pool, (num_slots, num_kv_heads, head_dim) each; bound by the model runner.
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata | None) -> torch.Tensor:
        lead = hidden.shape[:-1]                                        # (N,) flat, or (B, T) without a cache
        if self.qkv_proj is not None:
            q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
            q, k, v = self.qkv_proj(hidden).split([q_size, kv_size, kv_size], dim=-1)
        else:
            q, k, v = self.q_proj(hidden), self.k_proj(hidden), self.v_proj(hidden)
        q = q.view(*lead, self.num_heads, self.head_dim)                # (..., heads, head_dim)
        k = k.view(*lead, self.num_kv_heads, self.head_dim)             # (..., kv_heads, head_dim)
        v = v.view(*lead, self.num_kv_heads, self.head_dim)
        q, k = self.rotary_emb(positions, q, k)
        if meta is None:
            out = self._attend_full(q, k, v)
        else:
            out = self._attend_paged(q, k, v, meta)
        return self.o_proj(out.reshape(*lead, self.num_heads * self.head_dim))

    def _attend_full(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """No cache: each row of a (B, T) batch attends causally to itself (used by tests and the walk-through)."""
        # (B, T, heads, head_dim) -> (B, heads, T, head_dim) for SDPA
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             is_causal=True, enable_gqa=True)
        return out.transpose(1, 2)                                       # (B, T, heads, head_dim)

    def _decode_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          mask: torch.Tensor | None) -> torch.Tensor:
        """One query per sequence over its padded context. q (D, heads, head_dim); k, v (D, kv_heads, L, head_dim).

        PyTorch's CPU SDPA is fast without a mask but slow with one, so padded batches use plain matmuls,
        grouping the query heads that share a KV head instead of repeating K and V.
        """
        if mask is None:
            return F.scaled_dot_product_attention(q.unsqueeze(2), k, v, enable_gqa=True).squeeze(2)
        d, length = k.shape[0], k.shape[2]
        group = self.num_heads // self.num_kv_heads
        qg = q.view(d, self.num_kv_heads, group, self.head_dim)                     # (D, kv_heads, group, head_dim)
        scores = (qg @ k.transpose(-1, -2)).float() * self.head_dim ** -0.5          # (D, kv_heads, group, L)
        scores = scores.masked_fill(~mask.view(d, 1, 1, length), float("-inf"))
        probs = scores.softmax(dim=-1).to(v.dtype)
        return (probs @ v).view(d, self.num_heads, self.head_dim)                   # (D, heads, head_dim)

    def _attend_paged(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      meta: AttentionMetadata) -> torch.Tensor:
        assert self.k_cache is not None and self.v_cache is not None, "KV pool not bound to this layer"
        # Store this step's keys and values first: decode tokens then read them back with their context.
        self.k_cache.index_copy_(0, meta.slot_mapping, k)
        self.v_cache.index_copy_(0, meta.slot_mapping, v)
        out = torch.empty_like(q)                                        # (N, heads, head_dim)
        num_decode = meta.num_decode
        if num_decode:
            d, length = meta.decode_slots.shape
            slots = meta.decode_slots.view(-1)                            # index_select: half the cost of k[slots]
            kd = self.k_cache.index_select(0, slots).view(d, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
            vd = self.v_cache.index_select(0, slots).view(d, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
            out[:num_decode] = self._decode_attention(q[:num_decode], kd, vd, meta.decode_mask)
        for chunk in meta.prefills:
            s, e = chunk.start, chunk.start + chunk.length
            if chunk.context_slots is None:
                kc, vc = k[s:e], v[s:e]
            else:
                kc, vc = self.k_cache[chunk.context_slots], self.v_cache[chunk.context_slots]
            # (T, heads, head_dim) -> (1, heads, T, head_dim)
            qc = q[s:e].transpose(0, 1).unsqueeze(0)
            kc = kc.transpose(0, 1).unsqueeze(0)
            vc = vc.transpose(0, 1).unsqueeze(0)
            if chunk.length == chunk.context_len:
                oc = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, enable_gqa=True)
            else:
                # Query i sits at position (context_len - length + i) and sees every key up to it.
                offset = chunk.context_len - chunk.length
                rows = torch.arange(chunk.length, device=q.device).unsqueeze(1) + offset
                mask = torch.arange(chunk.context_len, device=q.device).unsqueeze(0) <= rows  # (T, context_len)
                oc = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=mask, enable_gqa=True)
            out[s:e] = oc.squeeze(0).transpose(0, 1)
        return out
