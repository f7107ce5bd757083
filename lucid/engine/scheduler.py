"""Which sequences run in the next step, and how many of their tokens. Pure Python.

Each step has a token budget. Running sequences go first: decoding ones need one token each, a long
prompt still being prefilled takes what budget is left (chunked prefill, so it never stalls the
streams already running). Then waiting sequences are admitted while there is room. When the KV pool
runs dry, the most recently admitted sequence is preempted: its blocks are freed and it goes back to
the front of the queue, to be recomputed later. With speculative decoding on, a decode row may carry
draft tokens (engine/speculative.py): it becomes a k+1-token verify row, and drops its drafts before
anything is preempted for it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from lucid.config import EngineConfig
from lucid.engine.block_manager import BlockManager
from lucid.engine.kv_reuse import KVReuse
from lucid.engine.sequence import Sequence, SequenceStatus
from lucid.engine.speculative import Speculator


@dataclass
class ScheduledSeq:
    seq: Sequence
    num_tokens: int          # tokens to compute this step, starting at seq.num_computed_tokens (drafts included)
    draft_token_ids: list[int] = field(default_factory=list)   # speculative drafts after the last token

    @property
    def samples(self) -> bool:
        """Whether this chunk reaches the sequence's last token, so a next token is sampled."""
        return self.seq.num_computed_tokens + self.num_committed == self.seq.num_tokens

    @property
    def num_committed(self) -> int:
        """Tokens of the sequence itself (not drafts) computed this step."""
        return self.num_tokens - len(self.draft_token_ids)

    @property
    def token_ids(self) -> list[int]:
        """The ids this row feeds the model: the sequence's next tokens, then its drafts."""
        start = self.seq.num_computed_tokens
        return self.seq.token_ids[start:start + self.num_committed] + self.draft_token_ids


@dataclass
class SchedulerOutput:
    decode: list[ScheduledSeq] = field(default_factory=list)    # one token each
    prefill: list[ScheduledSeq] = field(default_factory=list)   # prompt chunks
    preempted: list[Sequence] = field(default_factory=list)
    verify: list[ScheduledSeq] = field(default_factory=list)    # decode rows with speculative drafts

    @property
    def is_empty(self) -> bool:
        return not self.decode and not self.prefill and not self.verify

    @property
    def all(self) -> list[ScheduledSeq]:
        return self.decode + self.verify + self.prefill


class Scheduler:
    def __init__(self, config: EngineConfig, block_manager: BlockManager, speculator: Speculator | None = None,
                 kv_reuse: KVReuse | None = None) -> None:
        self.config = config
        self.blocks = block_manager
        self.speculator = speculator
        self.kv_reuse = kv_reuse    # copies K/V at shifted positions for requests that opt in (kv_reuse.py)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        # Prompt tokens this step may prefill: fewer while others decode, to keep their token rate smooth.
        cap = self.config.max_prefill_tokens_while_decoding
        decoding = cap > 0 and any(s.num_uncomputed_tokens == 1 for s in self.running)
        prefill_left = cap if decoding else budget
        drafting = self.speculator is not None and self.speculator.begin_step(
            sum(1 for s in self.running if s.num_uncomputed_tokens == 1))
        # 1. Running sequences, oldest first, so that preemption takes the newest.
        queue = list(self.running)
        while queue and budget > 0:
            seq = queue.pop(0)
            is_decode = seq.num_uncomputed_tokens == 1
            num_tokens = min(seq.num_computable_tokens, budget, 1 if is_decode else prefill_left)
            if num_tokens == 0:
                continue
            draft = self._draft(seq, budget) if drafting and is_decode else []
            if draft and not self.blocks.allocate(seq, seq.num_computed_tokens + 1 + len(draft)):
                draft = []                      # the pool is short: drafts go before anyone is preempted
            num_tokens += len(draft)
            while not self.blocks.allocate(seq, seq.num_computed_tokens + num_tokens):
                victim = queue.pop() if queue else seq
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                continue
            if draft:
                out.verify.append(ScheduledSeq(seq, num_tokens, draft))
            else:
                (out.decode if is_decode else out.prefill).append(ScheduledSeq(seq, num_tokens))
            budget -= num_tokens
            if not is_decode:
                prefill_left -= num_tokens
        # 2. Admit waiting sequences while seats, budget and blocks allow. Not after a preemption in this
        #    step: the pool is short, and a preempted sequence must not be re-admitted at once.
        while (self.waiting and min(budget, prefill_left) > 0 and not out.preempted
               and len(self.running) < self.config.max_num_seqs):
            seq = self.waiting[0]
            if self._shared_prefix_in_flight(seq):
                break  # a step or so later that prefix's KV is in the prefix cache: computed once for all
            if not seq.block_table:
                if not self.blocks.can_admit(seq, min(seq.num_tokens, budget, prefill_left)):
                    break
                self.blocks.admit(seq)
                if self.kv_reuse is not None:
                    self.kv_reuse.apply(seq, self.running)
            num_tokens = min(seq.num_computable_tokens, budget, prefill_left)
            if not self.blocks.allocate(seq, seq.num_computed_tokens + num_tokens):
                self.blocks.release(seq)
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.prefill.append(ScheduledSeq(seq, num_tokens))
            budget -= num_tokens
            prefill_left -= num_tokens
        return out

    def _draft(self, seq: Sequence, budget: int) -> list[int]:
        """Drafts for a decode row, within the step's token budget and the context limit."""
        limit = min(budget - 1, self.config.max_model_len - seq.num_tokens - 1)
        return self.speculator.draft(seq, limit) if limit > 0 else []

    def _shared_prefix_in_flight(self, seq: Sequence) -> bool:
        """Whether a running sequence is computing, this very step or a later one, the first prompt block of `seq`
        that the prefix cache does not hold yet: another completion of the same request (n > 1), or another
        request with the same prefix (conversations that arrive together with one system prompt). `seq` then waits
        and takes those blocks from the prefix cache once they are computed, instead of computing them a second
        time in the same step (llama.cpp's child slots and SGLang's in-batch prefix check do the same). Waiting
        costs it nothing: the sequence it waits for is what uses the step's prefill budget meanwhile."""
        if seq.block_table or not self.blocks.enable_prefix_caching:
            return False
        end = (len(self.blocks.match_prefix(seq)) + 1) * self.blocks.block_size  # the first uncached block's end
        if end > seq.num_tokens - 1:  # the last token is always computed: that block is never shared
            return False
        head = seq.token_ids[:end]
        return any(other.num_computed_tokens < end <= other.num_tokens and other.token_ids[:end] == head
                   for other in self.running)

    def _preempt(self, seq: Sequence) -> None:
        """Free the sequence's KV and queue it again; its tokens (prompt + output so far) will be recomputed."""
        self.blocks.release(seq)
        seq.status = SequenceStatus.WAITING
        self.running.remove(seq)
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def finish(self, seq: Sequence) -> None:
        """Remove a finished or aborted sequence and free its blocks at once."""
        if self.kv_reuse is not None:
            self.kv_reuse.remember(seq)
        self.blocks.release(seq)
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
