"""The KV pool's bookkeeping: fixed-size blocks, reference counts, and a prefix cache keyed by token hashes.

Pure Python. A full block's hash covers its tokens and every token before it (the previous block's hash),
so two sequences share a block only when their whole prefixes up to it are equal.
"""

from __future__ import annotations

from collections import OrderedDict

from lucid.engine.sequence import Sequence


def block_hash(previous: int | None, tokens: tuple[int, ...]) -> int:
    return hash((previous, tokens))


def pool_slots(block_table: list[int], block_size: int, start: int, end: int) -> list[int]:
    """The pool slots of positions start..end-1 of the sequence whose blocks are `block_table`."""
    return [block_table[p // block_size] * block_size + p % block_size for p in range(start, end)]


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "tokens", "generation")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None           # set once the block is full and its K/V computed
        self.tokens: tuple[int, ...] = ()
        self.generation = 0                    # times allocated: K/V remembered elsewhere is valid while unchanged


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Free blocks, oldest-freed first. A freed block keeps its hash until it is reused, so a later
        # request with the same prefix can take it back (that is the prefix cache).
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[int, int] = {}       # hash -> block id

    # ---- queries -------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self.free)

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """New blocks `seq` needs so that its first `num_tokens` tokens have a slot."""
        return max(0, -(-num_tokens // self.block_size) - len(seq.block_table))

    def match_prefix(self, seq: Sequence) -> list[int]:
        """Block ids already holding a prefix of `seq`'s tokens. The last token is never matched: its
        logits are needed, so at least one token is always computed."""
        if not self.enable_prefix_caching:
            return []
        matched: list[int] = []
        previous = None
        limit = (seq.num_tokens - 1) // self.block_size
        for i in range(limit):
            tokens = tuple(seq.token_ids[i * self.block_size:(i + 1) * self.block_size])
            h = block_hash(previous, tokens)
            block_id = self.cached.get(h)
            if block_id is None or self.blocks[block_id].tokens != tokens:
                break
            matched.append(block_id)
            previous = h
        return matched

    # ---- allocation ----------------------------------------------------------------------------
    def can_admit(self, seq: Sequence, num_new_tokens: int) -> bool:
        matched = self.match_prefix(seq)
        revived = sum(1 for b in matched if self.blocks[b].ref_count == 0)  # cached but free: they leave the pool
        # The step computes num_new_tokens past the cached prefix, never past the sequence's own end.
        total = min(len(matched) * self.block_size + num_new_tokens, seq.num_tokens)
        needed = -(-total // self.block_size) - len(matched)
        return needed + revived <= self.num_free_blocks

    def admit(self, seq: Sequence) -> int:
        """Give a waiting sequence its prefix-cached blocks; returns the number of cached tokens."""
        assert not seq.block_table
        for block_id in self.match_prefix(seq):
            self._take(block_id)
            seq.block_table.append(block_id)
        seq.num_computed_tokens = len(seq.block_table) * self.block_size
        seq.num_cached_tokens = seq.num_computed_tokens
        seq.num_hashed_blocks = len(seq.block_table)
        return seq.num_computed_tokens

    def allocate(self, seq: Sequence, num_tokens: int) -> bool:
        """Make room for `seq`'s first `num_tokens` tokens. False (and nothing changed) if the pool is short."""
        needed = self.blocks_needed(seq, num_tokens)
        if needed > len(self.free):
            return False
        for _ in range(needed):
            block_id, _ = self.free.popitem(last=False)
            block = self.blocks[block_id]
            if block.hash is not None and self.cached.get(block.hash) == block_id:
                del self.cached[block.hash]     # its old contents are about to be overwritten
            block.hash, block.tokens, block.ref_count = None, (), 1
            block.generation += 1
            seq.block_table.append(block_id)
        return True

    def release(self, seq: Sequence) -> None:
        """Drop `seq`'s hold on its blocks (finished, aborted or preempted). Unshared blocks become free at once."""
        for block_id in reversed(seq.block_table):
            self._drop(block_id)
        seq.block_table = []
        seq.num_computed_tokens = 0
        seq.num_hashed_blocks = 0
        seq.reused_spans, seq.num_exact_tokens = [], None

    def hold(self, block_ids: list[int]) -> None:
        """Keep blocks (free ones too) from being handed out until `unhold`; their K/V is being read."""
        for block_id in block_ids:
            self._take(block_id)

    def unhold(self, block_ids: list[int]) -> None:
        for block_id in block_ids:
            self._drop(block_id)

    def _take(self, block_id: int) -> None:
        """One more holder of a block; a free (cached) one leaves the free list."""
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free[block_id]
        block.ref_count += 1

    def _drop(self, block_id: int) -> None:
        """One holder fewer; the last one's leaving frees the block (its hash stays: the prefix cache)."""
        block = self.blocks[block_id]
        block.ref_count -= 1
        if block.ref_count == 0:
            self.free[block_id] = None

    def trim(self, seq: Sequence, num_tokens: int) -> None:
        """Hand back blocks past the first `num_tokens` tokens' (reserved for speculative drafts that were
        rejected). They were never published in the prefix cache: their slots hold no kept token."""
        keep = -(-num_tokens // self.block_size)
        while len(seq.block_table) > keep:
            self._drop(seq.block_table.pop())

    def register_computed(self, seq: Sequence) -> None:
        """After a step: publish `seq`'s newly full, computed blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        computed = min(seq.num_computed_tokens, seq.num_tokens)
        if seq.num_exact_tokens is not None:   # K/V after a copied span (kv_reuse.py) is approximate: never shared
            computed = min(computed, seq.num_exact_tokens)
        full = computed // self.block_size
        for i in range(seq.num_hashed_blocks, full):
            previous = self.blocks[seq.block_table[i - 1]].hash if i else None
            block = self.blocks[seq.block_table[i]]
            if block.hash is None:
                tokens = tuple(seq.token_ids[i * self.block_size:(i + 1) * self.block_size])
                block.hash, block.tokens = block_hash(previous, tokens), tokens
                self.cached.setdefault(block.hash, block.block_id)
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, full)

    def slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        return pool_slots(block_table, self.block_size, start, end)

    def slot(self, seq: Sequence, position: int) -> int:
        """The pool slot of token `position` of `seq`."""
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
