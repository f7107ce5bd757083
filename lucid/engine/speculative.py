"""N-gram speculative decoding, the bookkeeping half: drafts from a request's own text, and when to stop drafting.

Pure Python, no torch. A decoding sequence's last few tokens are looked up earlier in its prompt + output; the
tokens that followed the latest earlier match are the draft (prompt lookup: code edits copy most of their input).
The scheduler turns a decode row with k drafts into a k+1-token row; one forward verifies them all
(lucid/engine/spec_verify.py keeps or rejects each draft so the output distribution is unchanged).

Drafting steps down by itself when it does not pay:
- no n-gram of the tail occurs earlier: no draft (the row is a plain decode row);
- a sequence whose drafts are mostly rejected pauses drafting for a while (doubling each time it fails again);
- a batch with many decoding sequences is compute-bound already: extra verify rows would cost more than they save.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass

from lucid.engine.sequence import Sequence


@dataclass(frozen=True)
class SpeculativeConfig:
    method: str = "ngram"
    num_speculative_tokens: int = 8     # k: drafts per step at most
    prompt_lookup_min: int = 2          # shortest tail n-gram looked up
    prompt_lookup_max: int = 4          # longest (tried first: a longer match predicts better)
    max_batch_size: int = 4             # no drafting while more sequences than this decode together
    min_acceptance: float = 0.3         # a sequence drafting below this acceptance rate pauses
    pause_steps: int = 8                # first pause, in steps; doubles on each further failure (capped at 256)

    def __post_init__(self) -> None:
        if self.method != "ngram":
            raise ValueError(f"speculative method {self.method!r} is not supported (only 'ngram')")
        if not 1 <= self.num_speculative_tokens <= 15:
            raise ValueError(f"num_speculative_tokens must be in 1..15, got {self.num_speculative_tokens}")
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError("need 1 <= prompt_lookup_min <= prompt_lookup_max, got "
                             f"{self.prompt_lookup_min} and {self.prompt_lookup_max}")
        if self.max_batch_size < 1 or self.pause_steps < 0 or not 0 <= self.min_acceptance <= 1:
            raise ValueError("max_batch_size >= 1, pause_steps >= 0 and min_acceptance in [0, 1] are required")

    @classmethod
    def parse(cls, spec: str | None = None, config_json: str | dict | None = None) -> SpeculativeConfig | None:
        """`ngram` / `ngram:K` (the --speculative flag) and/or a vLLM-like JSON object (--speculative-config:
        method, num_speculative_tokens, prompt_lookup_min/max, max_batch_size, min_acceptance, pause_steps).
        None when neither asks for speculation."""
        fields: dict = {}
        if spec:
            method, _, k = spec.partition(":")
            fields["method"] = method.strip()
            if k:
                try:
                    fields["num_speculative_tokens"] = int(k)
                except ValueError:
                    raise ValueError(f"--speculative {spec!r}: K must be an integer (e.g. ngram:8)") from None
        if config_json:
            extra = json.loads(config_json) if isinstance(config_json, str) else dict(config_json)
            if not isinstance(extra, dict):
                raise ValueError("--speculative-config must be a JSON object")
            known = set(cls.__dataclass_fields__)
            unknown = sorted(set(extra) - known)
            if unknown:
                raise ValueError(f"--speculative-config: unknown keys {unknown} (known: {sorted(known)})")
            fields.update(extra)
        if not fields:
            return None
        return cls(**fields)


def find_draft(tokens: list[int], k: int, min_n: int, max_n: int, data: bytes | bytearray | None = None) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the longest tail n-gram (max_n down to min_n).
    `data`: the tokens as int32 bytes, when the caller keeps them (SpecState does, growing them as tokens come)."""
    size = len(tokens)
    if size < 2 or k < 1:
        return []
    # Searched as bytes (4 per token) so the scan runs at C speed: this runs for every decoding row of every step.
    if data is None:
        data = array("i", tokens).tobytes()
    for n in range(min(max_n, size - 1), min_n - 1, -1):
        tail = data[(size - n) * 4:]
        end = (size - 1) * 4          # a match must end before the last token (the tail itself is no match)
        pos = data.rfind(tail, 0, end)
        while pos > 0 and pos % 4:    # misaligned: a byte pattern spanning two tokens; look further back
            pos = data.rfind(tail, 0, pos + len(tail) - 1)
        if pos < 0 or pos % 4:
            continue
        start = pos // 4
        # What followed the match; where that runs into the tail itself, the text is periodic (period
        # size - n - start) and the draft goes on repeating it.
        follow: list[int] = []
        for j in range(start + n, start + n + k):
            follow.append(tokens[j] if j < size else follow[j - size])
        return follow
    return []


class SpecState:
    """One sequence's drafting record (lives on the Sequence as `seq.spec`)."""

    __slots__ = ("drafted", "accepted", "paused_until", "pause", "window_drafted", "window_accepted", "data")

    def __init__(self) -> None:
        self.drafted = 0
        self.accepted = 0
        self.window_drafted = 0      # since the last acceptance check
        self.window_accepted = 0
        self.paused_until = 0        # step number
        self.pause = 0
        self.data = bytearray()      # the sequence's tokens as int32 bytes, extended as they come

    def token_bytes(self, tokens: list[int]) -> bytearray:
        have = len(self.data) // 4
        if have < len(tokens):
            self.data += array("i", tokens[have:]).tobytes()
        return self.data


class Speculator:
    """Drafts for the scheduler's decode rows, and the record of how they fared."""

    def __init__(self, config: SpeculativeConfig) -> None:
        self.config = config
        self.step = 0
        self.num_drafted = 0         # every drafted token, engine-wide (for /metrics)
        self.num_accepted = 0

    def begin_step(self, num_decoding: int) -> bool:
        """Called once per schedule; False when this step's batch is too large to draft at all."""
        self.step += 1
        return num_decoding <= self.config.max_batch_size

    def draft(self, seq: Sequence, limit: int) -> list[int]:
        """At most `limit` draft tokens for a decoding sequence (fewer near max_tokens / the context limit)."""
        state = seq.spec
        if state is None:
            state = seq.spec = SpecState()
        if self.step < state.paused_until:
            return []
        params = seq.params
        if params.structured is not None:
            return []  # a draft row would need its own grammar state for its mask; constrained rows decode one by one
        room = params.max_tokens - seq.num_output_tokens - 1 if params.max_tokens is not None else limit
        k = min(self.config.num_speculative_tokens, limit, room)
        if k <= 0:
            return []
        return find_draft(seq.token_ids, k, self.config.prompt_lookup_min, self.config.prompt_lookup_max,
                          state.token_bytes(seq.token_ids))

    def record(self, seq: Sequence, drafted: int, accepted: int) -> None:
        """After verification: `accepted` of the `drafted` tokens were kept. Pauses a sequence that keeps failing."""
        self.num_drafted += drafted
        self.num_accepted += accepted
        state = seq.spec
        if state is None or drafted == 0:
            return
        state.drafted += drafted
        state.accepted += accepted
        state.window_drafted += drafted
        state.window_accepted += accepted
        if state.window_drafted < 4 * self.config.num_speculative_tokens:
            return
        if state.window_accepted < self.config.min_acceptance * state.window_drafted:
            state.pause = min(256, state.pause * 2) if state.pause else self.config.pause_steps
            state.paused_until = self.step + state.pause
        else:
            state.pause = 0
        state.window_drafted = state.window_accepted = 0
