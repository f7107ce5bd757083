"""Memory bandwidth: what the machine can move, and what a decoder must read per token.

Decoding one token reads every weight once (the embedding table only as the tied output head), so
bytes-per-token x tokens-per-second is the bandwidth decoding uses; near the measured bandwidth, it is memory-bound.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from lucid.layers.quantized_embedding import Q8Embedding


def measure_bandwidth(threads: int, megabytes: int = 512, repeats: int = 7) -> float:
    """Bytes per second of a large tensor copy on `threads` threads (each byte read once and written once: 2x size);
    the best of `repeats`. The buffers are far larger than any cache."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = torch.ones(megabytes * (1 << 20) // 4, dtype=torch.float32)
        dst = torch.empty_like(src)
        dst.copy_(src)  # fault the pages in before timing
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - started)
        return 2 * src.numel() * src.element_size() / best
    finally:
        torch.set_num_threads(previous)


def measure_read_bandwidth(threads: int, megabytes: int = 512, repeats: int = 7) -> float:
    """Bytes per second of summing a large tensor on `threads` threads: reads only, as decoding's weight stream
    does (so this is the ceiling decode can approach); the best of `repeats`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = torch.ones(megabytes * (1 << 20) // 4, dtype=torch.float32)
        src.sum()  # fault the pages in before timing
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            src.sum()
            best = min(best, time.perf_counter() - started)
        return src.numel() * src.element_size() / best
    finally:
        torch.set_num_threads(previous)


def weight_bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one decode step reads: every parameter and buffer once, except an embedding table that is
    only looked up (one row per token) rather than also used as the output head."""
    head = getattr(model, "lm_head", None)
    head_weight = getattr(head, "weight", None)
    lookup_only = {id(m.weight) for m in model.modules()
                   if isinstance(m, nn.Embedding) and m.weight is not head_weight}
    # A q8 embedding with rows of its own (an untied model's) is looked up too; one reading a tied head's rows
    # owns no buffers.
    lookup_only |= {id(b) for m in model.modules() if isinstance(m, Q8Embedding) for b in m.buffers(recurse=False)}
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen or id(tensor) in lookup_only:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
    return total


def gguf_bytes_per_token(path: str | Path) -> int:
    """The same for a GGUF file as llama.cpp reads it: every tensor's stored bytes, except `token_embd` when the
    file has its own `output.weight` (then the embedding is only looked up)."""
    from gguf import GGUFReader

    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(str(path)).tensors}
    if "output.weight" in tensors:
        tensors.pop("token_embd.weight", None)
    return sum(tensors.values())
