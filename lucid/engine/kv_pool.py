"""The KV block pool: how many bytes it gets, and memory for it that is committed only as blocks are written.

Default size (no --kv-cache-memory): what --max-num-seqs sequences of --max-model-len tokens can fill at once,
capped by KV_MEMORY_SHARE of the memory available when the engine starts. So a user serving one short chat does
not hold a gigabyte of empty cache, and a big batch cannot take the whole machine. --kv-cache-memory sets it exactly.
On the CPU the pool is an anonymous memory map: the OS hands out zeroed pages on first write, so the resident
size grows with the blocks actually used, not with the pool's size.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import torch

KV_MEMORY_SHARE = 0.5   # of the memory available at start-up, at most, for a pool sized by default


def available_memory() -> int:
    """Bytes this process can still get: the kernel's MemAvailable, lowered by a cgroup (v2) memory limit."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def kv_pool_bytes(kv_cache_memory: int | None, max_num_seqs: int, max_model_len: int, bytes_per_token: int,
                  block_size: int, available: int | None = None) -> int:
    """The pool's size in bytes: `kv_cache_memory` when given, else max_num_seqs × max_model_len tokens (whole
    blocks) capped by KV_MEMORY_SHARE × available memory, and never under one block."""
    if kv_cache_memory is not None:
        return kv_cache_memory
    per_block = bytes_per_token * block_size
    blocks_per_seq = -(-max_model_len // block_size)
    wanted = max_num_seqs * blocks_per_seq * per_block
    cap = int(KV_MEMORY_SHARE * (available_memory() if available is None else available))
    return max(per_block, min(wanted, cap // per_block * per_block))


def zeroed_pool(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zero tensor whose CPU pages are committed on first write (an anonymous map; the OS zero-fills it)."""
    if torch.device(device).type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    count = 1
    for size in shape:
        count *= size
    nbytes = count * torch.empty((), dtype=dtype).element_size()
    region = mmap.mmap(-1, max(nbytes, 1))
    # frombuffer keeps `region` alive for as long as the tensor (or a view of it) lives.
    return torch.frombuffer(region, dtype=dtype, count=count).view(shape)
