"""N-gram speculative decoding, the bookkeeping half: drafts from a request's own text, and when they pay.

Pure Python, no torch. A decoding sequence's last few tokens are looked up earlier in its prompt + output; the
tokens that followed the latest earlier match are the draft (prompt lookup: code edits copy most of their input).
The scheduler turns a decode row with k drafts into a k+1-token row; one forward verifies them all
(lucid/engine/spec_verify.py keeps or rejects each draft so the output distribution is unchanged).

Drafting steps down by itself when it does not pay, decided per sequence and per step by a small cost model:
- no n-gram of the tail occurs earlier: no draft (the row is a plain decode row);
- each sequence keeps a running estimate of how often the token after a kept draft is kept too (its drafts'
  continuation rate, recent outcomes weighing most). A verify row of k drafts emits 1 + a + ... + a^k tokens on
  average and costs a decode step plus `row_cost` per extra row plus `verify_cost`; the sequence drafts the k that
  gives the most tokens per unit of step time, and nothing when no k beats a plain decode step;
- a sequence not drafting still looks its draft up (a C-speed byte search) and scores it against the tokens that
  then come: free evidence, so drafting resumes the step the text starts copying again;
- the batch's own rows count in the same model (k more rows slow every row of the step), and past
  `max_batch_size` decoding sequences a step is compute-bound: no lookups at all.
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
    # The cost model, in units of a one-token decode step (fused step, 2 Zen 4 cores: ~11 ms at 1 row, ~30 ms at
    # 16; docs/BENCHMARKS.md). Lower them on a machine where extra rows are cheaper (a wide CPU, a GPU).
    row_cost: float = 0.15              # one more row in the step
    verify_cost: float = 0.05           # a verify row's fixed extra (its sampling and bookkeeping)

    def __post_init__(self) -> None:
        if self.method != "ngram":
            raise ValueError(f"speculative method {self.method!r} is not supported (only 'ngram')")
        if not 1 <= self.num_speculative_tokens <= 15:
            raise ValueError(f"num_speculative_tokens must be in 1..15, got {self.num_speculative_tokens}")
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError("need 1 <= prompt_lookup_min <= prompt_lookup_max, got "
                             f"{self.prompt_lookup_min} and {self.prompt_lookup_max}")
        if self.max_batch_size < 1 or self.row_cost < 0 or self.verify_cost < 0:
            raise ValueError("max_batch_size >= 1, row_cost >= 0 and verify_cost >= 0 are required")

    @classmethod
    def parse(cls, spec: str | None = None, config_json: str | dict | None = None) -> SpeculativeConfig | None:
        """`ngram` / `ngram:K` (the --speculative flag) and/or a vLLM-like JSON object (--speculative-config:
        method, num_speculative_tokens, prompt_lookup_min/max, max_batch_size, row_cost, verify_cost).
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




def best_draft_length(rate: float, k_max: int, batch: int, row_cost: float, verify_cost: float) -> int:
    """The draft length (0..k_max) that emits the most tokens per unit of step time, for a sequence whose drafts
    continue with probability `rate`, in a step of `batch` decoding rows. 0: a plain decode row is best."""
    base = 1 + row_cost * (batch - 1)                 # the step without drafts
    best_k, best = 0, batch / base                    # tokens per unit time without drafts
    tokens, term = float(batch), 1.0
    for k in range(1, k_max + 1):
        term *= rate
        tokens += term                                # + rate^k: draft k is kept if all before it were
        speed = tokens / (base + row_cost * k + verify_cost)
        if speed > best:
            best_k, best = k, speed
    return best_k


class SpecState:
    """One sequence's drafting record (lives on the Sequence as `seq.spec`)."""

    __slots__ = ("drafted", "accepted", "kept", "missed", "shadow", "shadow_at", "data")

    def __init__(self, prior_kept: float, prior_missed: float) -> None:
        self.drafted = 0             # real drafts, and of them kept
        self.accepted = 0
        self.kept = prior_kept       # decayed counts of draft outcomes (real and shadow): a draft kept after the
        self.missed = prior_missed   # ones before it were kept, and a run ended by a rejected draft
        self.shadow: list[int] = []  # a draft looked up but not sent (not worth it then), scored as tokens come
        self.shadow_at = 0           # the position its first token would have taken
        self.data = bytearray()      # the sequence's tokens as int32 bytes, extended as they come

    @property
    def rate(self) -> float:
        """Estimated probability that a draft is kept, given the one before it was."""
        return self.kept / (self.kept + self.missed)

    def learn(self, kept: int, missed: bool, decay: float) -> None:
        """One draft run's outcome: `kept` drafts kept, then a rejection (missed) or the run's end."""
        self.kept = self.kept * decay + kept
        self.missed = self.missed * decay + missed

    def score_shadow(self, tokens: list[int], decay: float) -> None:
        """Compare the shadow draft with the tokens generated since it was looked up; learn once it is decided."""
        have = len(tokens) - self.shadow_at
        if not self.shadow or have <= 0:
            return
        n = min(have, len(self.shadow))
        matched = 0
        while matched < n and tokens[self.shadow_at + matched] == self.shadow[matched]:
            matched += 1
        if matched < n:                          # it would have been rejected at `matched`
            self.learn(matched, True, decay)
            self.shadow = []
        elif matched == len(self.shadow):        # every draft would have been kept
            self.learn(matched, False, decay)
            self.shadow = []
        # else: all so far match and more is to come: keep scoring it next step

    def token_bytes(self, tokens: list[int]) -> bytearray:
        have = len(self.data) // 4
        if have < len(tokens):
            self.data += array("i", tokens[have:]).tobytes()
        return self.data


class Speculator:
    """Drafts for the scheduler's decode rows, and the record of how they fared."""

    PRIOR_KEPT, PRIOR_MISSED = 1.0, 2.0   # a new sequence's estimate: drafts continue 1 time in 3
    DECAY = 0.8                           # weight of older draft outcomes per newer one (recent text counts most)

    def __init__(self, config: SpeculativeConfig) -> None:
        self.config = config
        self.step = 0
        self.batch = 1               # decoding sequences in this step
        self.num_drafted = 0         # every drafted token, engine-wide (for /metrics)
        self.num_accepted = 0

    def begin_step(self, num_decoding: int) -> bool:
        """Called once per schedule; False when this step's batch is too large to draft at all."""
        self.step += 1
        self.batch = max(1, num_decoding)
        return num_decoding <= self.config.max_batch_size

    def draft(self, seq: Sequence, limit: int) -> list[int]:
        """At most `limit` draft tokens for a decoding sequence (fewer near max_tokens / the context limit):
        as many as pay by the cost model, or none."""
        state = seq.spec
        if state is None:
            state = seq.spec = SpecState(self.PRIOR_KEPT, self.PRIOR_MISSED)
        params = seq.params
        if params.structured is not None:
            return []  # a draft row would need its own grammar state for its mask; constrained rows decode one by one
        room = params.max_tokens - seq.num_output_tokens - 1 if params.max_tokens is not None else limit
        cfg = self.config
        limit = min(cfg.num_speculative_tokens, limit, room)
        if limit <= 0:
            return []
        tokens = seq.token_ids
        state.score_shadow(tokens, self.DECAY)
        k = best_draft_length(state.rate, limit, self.batch, cfg.row_cost, cfg.verify_cost)
        if k == 0 and state.shadow:
            return []                            # the last shadow draft is still being scored
        found = find_draft(tokens, cfg.num_speculative_tokens, cfg.prompt_lookup_min, cfg.prompt_lookup_max,
                           state.token_bytes(tokens))
        if k == 0:
            state.shadow, state.shadow_at = found, len(tokens)
            return []
        state.shadow = []
        return found[:k]

    def record(self, seq: Sequence, drafted: int, accepted: int) -> None:
        """After verification: `accepted` of the `drafted` tokens were kept."""
        self.num_drafted += drafted
        self.num_accepted += accepted
        state = seq.spec
        if state is None or drafted == 0:
            return
        state.drafted += drafted
        state.accepted += accepted
        state.learn(accepted, accepted < drafted, self.DECAY)
