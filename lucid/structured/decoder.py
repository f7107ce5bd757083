"""The model runner's side of constrained decoding: one matcher per constrained sequence, and for each step one
bitmask for all the batch's constrained rows (computed in parallel by the grammar engine), applied to the logits
as -inf before any sampling rule runs.

A matcher follows its sequence lazily: before each mask it consumes the output tokens it has not seen yet. So it
stays right whatever happened in between: a preempted sequence keeps its tokens (only its KV is recomputed) and
an aborted or finished one is forgotten. A token the grammar refuses (it can only come from outside the mask, e.g.
a stop token id) leaves the matcher in its error state, and the row is then allowed to end only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import llguidance
import torch

from lucid.engine.sequence import Sequence
from lucid.structured.backend import GrammarCompiler

log = logging.getLogger(__name__)


def _llg_torch() -> Any:
    """llguidance's torch helpers, imported on the first constrained step: the module pulls in torch._dynamo (~2 s),
    which a server that never sees a grammar should not pay at start-up."""
    import llguidance.torch

    return llguidance.torch


@dataclass
class _SequenceMatcher:
    matcher: llguidance.LLMatcher
    consumed: int = 0                                   # output tokens fed to the matcher so far
    allowed_counts: list[int] = field(default_factory=list)  # tokens allowed at each step (only when recording)


class StructuredDecoder:
    """Masks the logits of the sequences whose SamplingParams carry a GrammarSpec.

    A step costs a fixed handful of operations whatever the batch: one batched call that advances every matcher by
    the token it sampled last step, one batched call that writes every row's mask into a reused bitmask, and one
    kernel that applies it to the whole logits in place (a row without a grammar has all its bits set). No tensor
    is allocated and no logits row copied: on a busy 2-core machine each extra parallel torch op cost milliseconds.
    """

    def __init__(self, compiler: GrammarCompiler, eos_ids: list[int]) -> None:
        self.compiler = compiler
        self.eos_ids = list(eos_ids)
        self.vocab_size = compiler.vocab_size
        self.record_allowed = False          # `lucid trace` turns it on to show the mask of each step
        self._matchers: dict[int, _SequenceMatcher] = {}
        self._executor: llguidance.LLExecutor | None = None
        self._shifts = torch.arange(32, dtype=torch.int32)   # bit k of each 32-bit word of the bitmask
        self._compiled_ok = True                             # llguidance's compiled kernel works here
        self._bitmask = torch.empty(0, (self.vocab_size + 31) // 32, dtype=torch.int32)  # (capacity, words)
        self._end_only = self._end_only_row()                                              # (words,)

    def mask_logits(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        """Set the logits of tokens the grammar forbids to -inf, in place, for every constrained row at once."""
        rows = [i for i, s in enumerate(seqs) if s.params.structured is not None]
        if not rows:
            return
        states = self._follow_all([seqs[i] for i in rows])
        bitmask = self._bitmask_for(len(seqs))                                     # (B, words) int32
        if len(rows) < len(seqs):
            bitmask.fill_(-1)                                                      # rows without a grammar: all on
        work = []
        for i, state in zip(rows, states):
            if state.matcher.is_error():   # a token the grammar refused: let the row end rather than go on blind
                bitmask[i] = self._end_only
            else:
                work.append((state.matcher, i))
        if work:
            _llg_torch().fill_next_token_bitmask_par(self._pool(), work, bitmask)
        self._apply(logits, bitmask.to(logits.device))
        if self.record_allowed:
            counts = self._unpack(bitmask[rows]).sum(dim=-1).tolist()
            for state, count in zip(states, counts):
                state.allowed_counts.append(count)

    def _pool(self) -> llguidance.LLExecutor:
        """llguidance's thread pool for the batched calls, made on the first constrained step."""
        if self._executor is None:
            self._executor = llguidance.LLExecutor()
        return self._executor

    def _bitmask_for(self, batch: int) -> torch.Tensor:
        """The first `batch` rows of the reused bitmask (contiguous, as llguidance writes it by pointer)."""
        if self._bitmask.shape[0] < batch:
            self._bitmask = torch.empty(max(batch, 2 * self._bitmask.shape[0]), self._bitmask.shape[1],
                                        dtype=torch.int32)
        return self._bitmask[:batch]

    def _end_only_row(self) -> torch.Tensor:
        row = torch.zeros(self._bitmask.shape[1], dtype=torch.int32)
        for eos in self.eos_ids:
            row[eos // 32] |= torch.tensor(1, dtype=torch.int32) << (eos % 32)
        return row

    def _apply(self, logits: torch.Tensor, bitmask: torch.Tensor) -> None:
        """-inf where the bitmask's bit is 0, in place. On CPU llguidance's own kernel does it (0.5 ms at 16 rows of
        151,936; a torch.compile'd function: ~2 s to compile on first use). Where that fails (no compiler), and on
        other devices, the bits are unpacked to a bool mask (~8 ms at 16 rows)."""
        if self._compiled_ok and logits.device.type == "cpu":
            try:
                _llg_torch().apply_token_bitmask_inplace(logits, bitmask)
                return
            except Exception as exc:  # noqa: BLE001 - inductor's errors vary; the fallback below is exact
                log.warning("llguidance's compiled mask kernel failed (%s); unpacking the bitmask instead", exc)
                self._compiled_ok = False
        allowed = self._unpack(bitmask.to(logits.device))                          # (R, V) bool
        logits.masked_fill_(~allowed, float("-inf"))

    def _unpack(self, bitmask: torch.Tensor) -> torch.Tensor:
        words = bitmask.shape[1]
        bits = (bitmask.unsqueeze(-1) >> self._shifts.to(bitmask.device)) & 1    # (R, words, 32)
        return bits.view(bitmask.shape[0], words * 32)[:, :self.vocab_size].bool()  # (R, V)

    def _follow_all(self, seqs: list[Sequence]) -> list[_SequenceMatcher]:
        """Each sequence's matcher, advanced over the output tokens it has not consumed yet: the usual one token of
        every row in one batched call; a longer lag (a matcher made for a sequence that already has output, as
        `lucid trace` and a restarted engine do) through the matcher's own consume_tokens."""
        states, one_each, lagging = [], [], []
        for seq in seqs:
            state = self._matchers.get(seq.seq_id)
            if state is None:
                state = _SequenceMatcher(self.compiler.new_matcher(seq.params.structured))
                self._matchers[seq.seq_id] = state
            states.append(state)
            output = seq.output_token_ids
            behind = len(output) - state.consumed
            if behind == 1:
                one_each.append((state.matcher, output[-1]))
            elif behind > 1:
                lagging.append((state.matcher, output[state.consumed:]))
            state.consumed = len(output)
        if one_each:
            self._pool().consume_token_par(one_each)     # a refused token leaves that matcher in its error state
        for matcher, tokens in lagging:
            matcher.consume_tokens(tokens)
        return states

    def allowed_counts(self, seq: Sequence) -> list[int]:
        """Tokens the grammar allowed at each step of this sequence (recorded while `record_allowed` is on)."""
        state = self._matchers.get(seq.seq_id)
        return list(state.allowed_counts) if state else []

    def forget(self, seq: Sequence) -> None:
        self._matchers.pop(seq.seq_id, None)
