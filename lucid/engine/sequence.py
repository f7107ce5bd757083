"""One sequence being generated: its tokens, where its KV lives, and how far it has got. Pure Python."""

from __future__ import annotations

import itertools
from enum import Enum, auto

from lucid.sampling_params import SamplingParams

_next_seq_id = itertools.count()


class SequenceStatus(Enum):
    WAITING = auto()    # not admitted yet, or preempted (its KV was dropped and will be recomputed)
    RUNNING = auto()
    FINISHED = auto()


class Sequence:
    """Prompt + output token ids of one completion. A request with n > 1 has n sequences."""

    def __init__(self, request_id: str, index: int, prompt_token_ids: list[int], params: SamplingParams,
                 arrival: float = 0.0) -> None:
        self.seq_id = next(_next_seq_id)
        self.request_id = request_id
        self.index = index                      # which of the request's n completions
        self.params = params
        self.arrival = arrival
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        self.num_computed_tokens = 0            # tokens whose K/V is in the pool
        self.num_cached_tokens = 0              # prompt tokens found in the prefix cache at admission
        self.num_hashed_blocks = 0              # leading blocks already published in the prefix cache
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.error: str | None = None
        self.spec = None                        # speculative decoding's record (engine/speculative.SpecState)
        # Shifted-K/V reuse (engine/kv_reuse.py): prompt spans (start, end) whose K/V was copied, not computed, and
        # how many leading tokens are exact (only those may enter the prefix cache); None: all of them.
        self.reused_spans: list[tuple[int, int]] = []
        self.num_exact_tokens: int | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def num_computable_tokens(self) -> int:
        """Tokens a step may compute from here: up to the next copied span, or to the end."""
        end = self.reused_spans[0][0] if self.reused_spans else len(self.token_ids)
        return end - self.num_computed_tokens

    def advance(self, num_tokens: int) -> None:
        """`num_tokens` more tokens have their K/V in the pool; a copied span reached is skipped over."""
        self.num_computed_tokens += num_tokens
        self.skip_reused()

    def skip_reused(self) -> None:
        while self.reused_spans and self.num_computed_tokens == self.reused_spans[0][0]:
            self.num_computed_tokens = self.reused_spans.pop(0)[1]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)

    def finish(self, reason: str, stop_reason: int | str | None = None, error: str | None = None) -> None:
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
        self.stop_reason = stop_reason
        self.error = error

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, req={self.request_id}#{self.index}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, blocks={len(self.block_table)}, {self.status.name})")
