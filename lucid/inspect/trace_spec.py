"""`lucid trace --speculative`: mark the tokens n-gram speculation would have drafted and kept.

The trace runs the model one token at a time; this replays the engine's own proposer and step-down policy
(lucid/engine/speculative.py) over the trace's tokens. An engine step with drafts d_1..d_k emits the drafts that
match the chosen tokens, then one more token; the marker groups the trace's steps the same way. For greedy
decoding that is exactly what `--speculative` does in the engine (its output is identical); when sampling, a
mark means the draft equalled the token drawn (the engine keeps such a draft with probability p(d)).
"""

from __future__ import annotations

from lucid.engine.sequence import Sequence
from lucid.engine.speculative import SpeculativeConfig, Speculator
from lucid.inspect.trace import TraceStep
from lucid.sampling_params import SamplingParams


class DraftMarker:
    def __init__(self, config: SpeculativeConfig, prompt_ids: list[int], max_tokens: int) -> None:
        self.speculator = Speculator(config)
        self.seq = Sequence("trace", 0, prompt_ids, SamplingParams(max_tokens=max_tokens))
        self.draft: list[int] | None = None   # the current engine step's drafts (None: a new step begins)
        self.kept = 0                          # of them, kept so far

    def mark(self, step: TraceStep) -> None:
        """Set step.draft_id (the draft proposed for this position, if any) and step.drafted (it was kept)."""
        if self.draft is None:
            self.speculator.begin_step(1)
            self.draft = self.speculator.draft(self.seq, 1 << 30)
            self.kept = 0
        if self.kept < len(self.draft):
            step.draft_id = self.draft[self.kept]
            step.drafted = step.chosen_id == step.draft_id
        self.seq.append_token(step.chosen_id)
        if step.drafted:
            self.kept += 1
        else:                                  # a rejected draft's replacement, or the token after all drafts
            self.speculator.record(self.seq, len(self.draft), self.kept)
            self.draft = None

    @property
    def summary(self) -> str:
        s = self.speculator
        return f"speculative (n-gram): {s.num_accepted} of {s.num_drafted} drafted tokens kept"
