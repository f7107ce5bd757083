"""An embedding that reads its rows from a tied lm_head's int8 weights, so the table is held once, quantized.

A tied model (Qwen2.5-0.5B: 151,936 × 896) uses one matrix as the embedding and as the lm_head. Kept in bfloat16
for lookups it costs 0.27 GB; once the head is quantized (lucid.kernels' q8: int8 blocks of 32 with a float16
scale each, packed for the VNNI kernel) the embedding can dequantize just the rows a step looks up from those same
packed bytes. The lookup returns exactly the head's dequantized rows.
"""

from __future__ import annotations

import torch
from torch import nn

from lucid.kernels import GROUP_ROWS, QK


class Q8Embedding(nn.Module):
    """`nn.Embedding` over the packed weights of a q8 linear layer (lucid.kernels.linear.Q8Linear)."""

    def __init__(self, head: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        # Not a submodule: the tensors belong to lm_head (saved and moved with it, never twice).
        object.__setattr__(self, "head", head)
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features
        self.dtype = dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        buffers = self.head._buffers
        groups, blocks, _ = buffers["qweight"].shape
        flat = ids.reshape(-1)
        group, row = flat // GROUP_ROWS, flat % GROUP_ROWS
        # Byte j*64 + r*4 + t of a (group, block) holds row r's weight k = 4j + t of that block.
        packed = buffers["qweight"].view(groups, blocks, QK // 4, GROUP_ROWS, 4)
        q = packed[group, :, :, row, :]                                         # (N, blocks, 8, 4) uint8, q + 128
        scales = buffers["scales"].view(torch.float16).view(groups, blocks, GROUP_ROWS)[group, :, row]  # (N, blocks)
        rows = (q.reshape(len(flat), blocks, QK).float() - 128.0) * scales.float().unsqueeze(-1)      # (N, blocks, QK)
        return rows.reshape(*ids.shape, blocks * QK).to(self.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rows read from lm_head's q8 weights"
