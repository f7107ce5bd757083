"""Reusing K/V at shifted positions: llama.cpp's `--cache-reuse`, for editors' fill-in-the-middle requests. Pure Python.

The prefix cache (block_manager.py) is exact: a block is shared only when every token before it is equal. An editor's
typing session defeats it. Each keystroke sends `<|fim_prefix|>…typed line<|fim_suffix|>…suffix<|fim_middle|>`: the
typed line grows, so the ~500 suffix tokens after it move to new positions and the prefix cache stops at the line.

Here a sequence that opts in (`SamplingParams.cache_reuse` = N > 0) looks, right after its admission, for runs of at
least N of its uncomputed prompt tokens in a recent sequence's K/V (a finished one, or a running sibling), at any
position. Each run is copied into the sequence's own blocks, its keys rotated by the position shift (RoPE is a
rotation by angle × position, so a key moves from position p to p + d by one more rotation by d; the model runner
does the tensor work). The tokens between runs, and the last prompt token, are computed as usual; the copied runs are
skipped (`Sequence.reused_spans`).

It is an approximation, as in llama.cpp: a copied key/value was computed attending to the *old* text before it (the
old typed line), not the new one. So it is opt-in per request (the server turns it on for FIM requests only), and
nothing computed from a copied run on is ever published in the exact prefix cache (`Sequence.num_exact_tokens`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lucid.engine.block_manager import BlockManager
from lucid.engine.sequence import Sequence, SequenceStatus

KGRAM = 16              # tokens hashed to find run candidates (runs are at least this long)
# Tokens computed again at the head of a copied run that follows an edit. They carry what came before them most: in a
# typing session on the real model, the copied K of <|fim_suffix|> (the token right after the typed line) differed
# from the exact one by up to 7.1, the next two by 2.4 and 1.1, the rest by bf16 rounding (~0.25-0.5); copied as-is,
# the completion went on from the *old* typed line ("return m" -> "ath.pi" after "return math."). Recomputing them
# costs a few milliseconds a keystroke.
RECOMPUTE_AFTER_EDIT = 16
MAX_REMEMBERED = 8      # finished sequences kept as sources


@dataclass(frozen=True)
class Run:
    """Tokens new[new_start:new_start+length] equal old[old_start:old_start+length]."""
    old_start: int
    new_start: int
    length: int

    @property
    def shift(self) -> int:
        return self.new_start - self.old_start


@dataclass
class Source:
    """A sequence's K/V as it was when last seen: its computed tokens and where they live."""
    token_ids: list[int]
    block_table: list[int]
    generations: list[int]    # each block's allocation count then: a block reallocated since holds other K/V


# copy_kv(source slots, destination slots, position shift): the model runner's tensor work
CopyKV = Callable[[list[int], list[int], int], None]


def find_runs(new: list[int], start: int, end: int, old: list[int], min_length: int) -> list[Run]:
    """Greedy left-to-right runs of new[start:end] found in `old`, each at least `min_length` tokens, in increasing
    order in both lists (llama.cpp's chunk walk, with a k-gram index instead of a scan)."""
    k = min(KGRAM, min_length)
    index: dict[tuple[int, ...], int] = {}
    for j in range(len(old) - k + 1):
        index.setdefault(tuple(old[j:j + k]), j)
    runs: list[Run] = []
    i, old_floor = start, 0
    while i + min_length <= end:
        j = index.get(tuple(new[i:i + k]))
        if j is None or j < old_floor:
            i += 1
            continue
        length = k
        while i + length < end and j + length < len(old) and new[i + length] == old[j + length]:
            length += 1
        if length >= min_length:
            runs.append(Run(j, i, length))
            i += length
            old_floor = j + length
        else:
            i += 1
    return runs


class KVReuse:
    def __init__(self, blocks: BlockManager, copy_kv: CopyKV) -> None:
        self.blocks = blocks
        self.copy_kv = copy_kv
        self.finished: deque[Source] = deque(maxlen=MAX_REMEMBERED)
        self.num_reused_tokens = 0

    def remember(self, seq: Sequence) -> None:
        """Keep a finishing sequence's K/V as a source (call before its blocks are released)."""
        if seq.params.cache_reuse > 0 and seq.num_computed_tokens > 0:
            self.finished.append(self._source(seq))

    def _source(self, seq: Sequence) -> Source:
        n = min(seq.num_computed_tokens, seq.num_tokens)
        table = list(seq.block_table)
        return Source(seq.token_ids[:n], table, [self.blocks.blocks[b].generation for b in table])

    def _intact(self, source: Source, runs: list[Run]) -> bool:
        bs = self.blocks.block_size
        for run in runs:
            for b in range(run.old_start // bs, (run.old_start + run.length - 1) // bs + 1):
                if self.blocks.blocks[source.block_table[b]].generation != source.generations[b]:
                    return False
        return True

    def apply(self, seq: Sequence, running: list[Sequence]) -> int:
        """Right after `seq`'s admission: copy the longest reusable runs of its prompt from the best source into its
        blocks. Returns the number of tokens reused (0 when nothing fits, or the pool is short)."""
        min_length = seq.params.cache_reuse
        start, end = seq.num_computed_tokens, seq.num_prompt_tokens - 1   # the last prompt token is computed
        if min_length <= 0 or end - start < min_length:
            return 0
        candidates = [self._source(s) for s in running
                      if s is not seq and s.params.cache_reuse > 0 and s.status is SequenceStatus.RUNNING]
        best: tuple[int, Source, list[Run]] | None = None
        for source in candidates + list(reversed(self.finished)):
            runs = self._after_edits(find_runs(seq.token_ids, start, end, source.token_ids, min_length),
                                     seq.token_ids, source.token_ids)
            reused = sum(r.length for r in runs)
            if reused and (best is None or reused > best[0]) and self._intact(source, runs):
                best = (reused, source, runs)
        if best is None:
            return 0
        reused, source, runs = best
        last = runs[-1].new_start + runs[-1].length
        # Hold the source blocks while allocating, so that the allocation cannot hand them out (and overwrite them).
        held = sorted({source.block_table[p // self.blocks.block_size]
                       for r in runs for p in range(r.old_start, r.old_start + r.length)})
        self.blocks.hold(held)
        try:
            # Leave a block for each running sequence's next tokens: taking the pool's last blocks here would only
            # preempt this sequence again at the next step (and copy again when it comes back).
            if self.blocks.blocks_needed(seq, last) + len(running) > self.blocks.num_free_blocks \
                    or not self.blocks.allocate(seq, last):
                return 0
            for run in runs:
                self.copy_kv(self.blocks.slots(source.block_table, run.old_start, run.old_start + run.length),
                             self.blocks.slots(seq.block_table, run.new_start, run.new_start + run.length), run.shift)
        finally:
            self.blocks.unhold(held)
        seq.num_exact_tokens = runs[0].new_start
        seq.reused_spans = [(r.new_start, r.new_start + r.length) for r in runs]
        seq.num_cached_tokens += reused
        seq.skip_reused()
        self.num_reused_tokens += reused
        return reused

    @staticmethod
    def _after_edits(runs: list[Run], new: list[int], old: list[int]) -> list[Run]:
        """Each run without the RECOMPUTE_AFTER_EDIT tokens at its head, unless everything before it is the same in
        both (then its K/V is exact: a sibling completion, a repeated prompt)."""
        kept = []
        for run in runs:
            if not (run.shift == 0 and new[:run.new_start] == old[:run.old_start]):
                run = Run(run.old_start + RECOMPUTE_AFTER_EDIT, run.new_start + RECOMPUTE_AFTER_EDIT,
                          run.length - RECOMPUTE_AFTER_EDIT)
            if run.length > 0:
                kept.append(run)
        return kept
