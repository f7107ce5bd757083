"""Grouped-query self-attention reading and writing K/V through a paged block pool.

One class for every family; the differences are constructor arguments: q/k/v bias (Qwen2), a per-head RMSNorm on
queries and keys before rotation (Qwen3, Gemma 3), the score scale (Gemma 3's query_pre_attn_scalar) and a sliding
window (Gemma 3's local layers: a query sees only the `sliding_window` latest positions, itself included).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lucid.layers.attention_metadata import AttentionMetadata
from lucid.layers.rotary import RotaryEmbedding


class Attention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, rotary_emb: RotaryEmbedding, *,
                 head_dim: int | None = None, bias: bool = False,
                 qk_norm: Callable[[int], nn.Module] | None = None, scaling: float | None = None,
                 sliding_window: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim or hidden_size // num_heads
        self.scaling = scaling if scaling is not None else self.head_dim ** -0.5
        self.sliding_window = sliding_window
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)
        if qk_norm is not None:  # HF names: self_attn.q_norm / self_attn.k_norm, one weight of head_dim each
            self.q_norm = qk_norm(self.head_dim)
            self.k_norm = qk_norm(self.head_dim)
        # Serving fuses q/k/v into one matmul at load time (lucid.fusion); None keeps the three HF modules.
        self.qkv_proj: nn.Module | None = None
        self.rotary_emb = rotary_emb  # shared by the layers that rotate alike (it holds no weights)
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
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rotary_emb(positions, q, k)
        if meta is None:
            out = self._attend_full(q, k, v)
        else:
            out = self._attend_paged(q, k, v, positions, meta)
        return self.o_proj(out.reshape(*lead, self.num_heads * self.head_dim))

    def _window(self, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor | None:
        """(Q, K) True where the key is visible to the query (causal, and within the sliding window if any);
        None for a full-attention layer whose caller already handles causality."""
        visible = key_pos.unsqueeze(0) <= query_pos.unsqueeze(1)
        if self.sliding_window:
            visible &= key_pos.unsqueeze(0) > query_pos.unsqueeze(1) - self.sliding_window
        return visible

    def _attend_full(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """No cache: each row of a (B, T) batch attends causally to itself (used by tests and the walk-through)."""
        # (B, T, heads, head_dim) -> (B, heads, T, head_dim) for SDPA
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.sliding_window and q.shape[1] > self.sliding_window:
            pos = torch.arange(q.shape[1], device=q.device)
            out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=self._window(pos, pos), scale=self.scaling,
                                                 enable_gqa=True)
        else:
            out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=self.scaling, enable_gqa=True)
        return out.transpose(1, 2)                                       # (B, T, heads, head_dim)

    def _decode_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          mask: torch.Tensor | None) -> torch.Tensor:
        """One query per sequence over its padded context. q (D, heads, head_dim); k, v (D, kv_heads, L, head_dim).

        PyTorch's CPU SDPA is fast without a mask but slow with one, so padded batches use plain matmuls,
        grouping the query heads that share a KV head instead of repeating K and V.
        """
        if mask is None:
            return F.scaled_dot_product_attention(q.unsqueeze(2), k, v, scale=self.scaling, enable_gqa=True).squeeze(2)
        d, length = k.shape[0], k.shape[2]
        group = self.num_heads // self.num_kv_heads
        qg = q.view(d, self.num_kv_heads, group, self.head_dim)                     # (D, kv_heads, group, head_dim)
        scores = (qg @ k.transpose(-1, -2)).float() * self.scaling                  # (D, kv_heads, group, L)
        scores = scores.masked_fill(~mask.view(d, 1, 1, length), float("-inf"))
        probs = scores.softmax(dim=-1).to(v.dtype)
        return (probs @ v).view(d, self.num_heads, self.head_dim)                   # (D, heads, head_dim)

    def _decode_mask(self, meta: AttentionMetadata, positions: torch.Tensor, length: int) -> torch.Tensor | None:
        """The runner's padding mask (D, L), narrowed to the window on a sliding layer (slot l holds position l)."""
        mask = meta.decode_mask
        if self.sliding_window and length > self.sliding_window:
            window = self._window(positions[:meta.num_decode], torch.arange(length, device=positions.device))
            mask = window if mask is None else mask & window
        return mask

    def _attend_paged(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
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
            mask = self._decode_mask(meta, positions, length)
            out[:num_decode] = self._decode_attention(q[:num_decode], kd, vd, mask)
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
            windowed = self.sliding_window is not None and chunk.context_len > self.sliding_window
            if chunk.length == chunk.context_len and not windowed:
                oc = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, scale=self.scaling, enable_gqa=True)
            else:
                # Query i sits at position (context_len - length + i) and sees every key up to it (in its window).
                offset = chunk.context_len - chunk.length
                rows = torch.arange(chunk.length, device=q.device) + offset
                mask = self._window(rows, torch.arange(chunk.context_len, device=q.device))  # (T, context_len)
                oc = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=mask, scale=self.scaling, enable_gqa=True)
            out[s:e] = oc.squeeze(0).transpose(0, 1)
        return out


class Qwen2Attention(Attention):
    """Qwen2's attention: q/k/v with bias, o without."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, rotary_emb: RotaryEmbedding) -> None:
        super().__init__(hidden_size, num_heads, num_kv_heads, rotary_emb, bias=True)
