"""Which replica holds which prompt prefix: the router's memory, pure Python (no Ray), so it is unit-tested alone.

A prompt is cut into blocks of the engine's block size and each block is named by a hash chained over everything
before it, as the engine's prefix cache names its KV blocks: equal hashes mean equal whole prefixes. The table maps
each hash to the replicas that were sent a prompt containing it, so they hold (or recently held) its KV blocks.
Bounded: the least recently used hashes are forgotten first, as the replicas' own caches evict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence

DEFAULT_MAX_HASHES = 200_000  # ~100k-token histories per replica on a few replicas; a few tens of MB at most


def block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    """The chained hash of every full block of `token_ids`."""
    hashes: list[int] = []
    previous = 0
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        previous = hash((previous, tuple(token_ids[start:start + block_size])))
        hashes.append(previous)
    return hashes


class PrefixTable:
    def __init__(self, block_size: int, max_hashes: int = DEFAULT_MAX_HASHES) -> None:
        self.block_size = block_size
        self.max_hashes = max_hashes
        self._holders: OrderedDict[int, set[Hashable]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._holders)

    def longest_match(self, hashes: Sequence[int], candidates: Iterable[Hashable]) -> tuple[set[Hashable], int]:
        """The candidates holding the longest prefix of `hashes`, and how many tokens that prefix has.
        (All candidates and 0 when none holds even the first block.)"""
        holding = set(candidates)
        matched = 0
        for h in hashes:
            narrower = holding & self._holders.get(h, set())
            if not narrower:
                break
            holding = narrower
            matched += 1
        return holding, matched * self.block_size

    def record(self, hashes: Sequence[int], replica: Hashable) -> None:
        """`replica` was sent a prompt with these blocks: it will hold them."""
        for h in hashes:
            holders = self._holders.get(h)
            if holders is None:
                self._holders[h] = {replica}
            else:
                holders.add(replica)
                self._holders.move_to_end(h)
        while len(self._holders) > self.max_hashes:
            self._holders.popitem(last=False)

    def forget_replica(self, replica: Hashable) -> None:
        """A replica died: its restarted successor starts with an empty cache."""
        for h in [h for h, holders in self._holders.items() if replica in holders]:
            holders = self._holders[h]
            holders.discard(replica)
            if not holders:
                del self._holders[h]
