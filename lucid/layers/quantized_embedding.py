"""Embeddings held as q8 (lucid.kernels' packed int8 blocks), dequantized a few rows at a time on lookup.

Qwen2.5-0.5B's table is 151,936 × 896: 0.27 GB in bfloat16, 0.14 GB in q8 (int8 blocks of 32 with a float16
scale each, rows interleaved in groups of 16 for the VNNI kernel). A step looks up one row per token, so
dequantizing on lookup costs next to nothing.
- A tied model uses one matrix as embedding and lm_head: once the head is q8 (`lucid.kernels.linear.Q8Linear`),
  `Q8Embedding` reads its rows from the head's packed bytes, so the table is held once.
- An untied model's embedding is packed the same way on its own (`Q8Embedding.packed`), its buffers saved under
  `model.embed_tokens.*` in the packed-weights cache.
Either way a lookup returns exactly the packed rows' dequantized values (the head's own, when tied).
"""

from __future__ import annotations

import torch
from torch import nn

from lucid.kernels import GROUP_ROWS, QK, pack_q8

BUFFER_NAMES = ("qweight", "scales")


def q8_rows(qweight: torch.Tensor, scales: torch.Tensor, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Rows `ids` (any shape) of a `pack_q8` matrix, dequantized: (*ids.shape, K) in `dtype`."""
    groups, blocks, _ = qweight.shape
    flat = ids.reshape(-1)
    group, row = flat // GROUP_ROWS, flat % GROUP_ROWS
    # Byte j*64 + r*4 + t of a (group, block) holds row r's weight k = 4j + t of that block.
    packed = qweight.view(groups, blocks, QK // 4, GROUP_ROWS, 4)
    q = packed[group, :, :, row, :]                                             # (N, blocks, 8, 4) uint8, q + 128
    d = scales.view(torch.float16).view(groups, blocks, GROUP_ROWS)[group, :, row]  # (N, blocks)
    rows = (q.reshape(len(flat), blocks, QK).float() - 128.0) * d.float().unsqueeze(-1)  # (N, blocks, QK)
    return rows.reshape(*ids.shape, blocks * QK).to(dtype)


class Q8Embedding(nn.Module):
    """`nn.Embedding` over q8 packed rows: a tied head's (`Q8Embedding(head, dtype)`) or its own
    (`Q8Embedding.packed`)."""

    def __init__(self, head: nn.Module | None, dtype: torch.dtype) -> None:
        super().__init__()
        # Not a submodule: a tied head's tensors belong to lm_head (saved and moved with it, never twice).
        object.__setattr__(self, "head", head)
        if head is not None:
            self.num_embeddings, self.embedding_dim = head.out_features, head.in_features
        self.dtype = dtype

    @classmethod
    def packed(cls, qweight: torch.Tensor, scales: torch.Tensor, num_embeddings: int,
               dtype: torch.dtype) -> Q8Embedding:
        """An embedding that owns its packed rows (from `pack_q8`, or the packed-weights cache)."""
        embedding = cls(None, dtype)
        embedding.num_embeddings, embedding.embedding_dim = num_embeddings, qweight.shape[1] * QK
        embedding.register_buffer("qweight", qweight)
        embedding.register_buffer("scales", scales)
        return embedding

    @classmethod
    def quantize(cls, weight: torch.Tensor, dtype: torch.dtype) -> Q8Embedding:
        """A float (num_embeddings, K) table, packed as q8."""
        qweight, scales = pack_q8(weight)
        return cls.packed(qweight, scales, weight.shape[0], dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        buffers = (self.head if self.head is not None else self)._buffers
        return q8_rows(buffers["qweight"], buffers["scales"], ids, self.dtype)

    def extra_repr(self) -> str:
        where = "rows read from lm_head's q8 weights" if self.head is not None else "q8 g32 rows"
        return f"{self.num_embeddings}, {self.embedding_dim}, {where}"
