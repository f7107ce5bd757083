"""Per-request text bookkeeping: incremental detokenization, stop strings, and the output objects."""

from __future__ import annotations

from lucid.engine.outputs import CompletionOutput, RequestOutput, TokenLogprob
from lucid.engine.sequence import Sequence


class CompletionState:
    """Text of one sequence. Holds back any tail that could still grow into a stop string."""

    def __init__(self, seq: Sequence, detokenizer) -> None:
        self.seq = seq
        self.detokenizer = detokenizer
        self.text = ""            # decoded text so far, stop string not included
        self.emitted = 0          # characters of `text` already handed out
        self.emitted_tokens = 0   # output tokens already handed out
        self.all_logprobs: list[TokenLogprob] = []
        self.emitted_logprobs = 0

    def add_token(self, token_id: int) -> str | None:
        """Decode one more token. Returns the stop string it completed, if any (the text then ends before it)."""
        before = len(self.text)
        self.text += self.detokenizer.add(token_id)
        params = self.seq.params
        if not params.stop or self.seq.num_output_tokens < params.min_tokens:
            return None
        # A new match must end inside the new text, so it starts at most (len(stop) - 1) characters earlier.
        window_start = max(0, before - max(len(s) for s in params.stop) + 1)
        for stop in params.stop:
            at = self.text.find(stop, window_start)
            if at != -1:
                self.text = self.text[:at]
                return stop
        return None

    def finish_text(self) -> None:
        """At the end, release what the detokenizer still holds (unless a stop string cut the text)."""
        if not isinstance(self.seq.stop_reason, str):
            self.text += self.detokenizer.flush()

    def _holdback(self) -> int:
        """Characters at the end of the text that are a prefix of a stop string (not safe to emit yet)."""
        if self.seq.is_finished:
            return 0
        longest = 0
        for stop in self.seq.params.stop:
            for k in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:k]):
                    longest = k
                    break
        return longest

    def take_output(self) -> CompletionOutput:
        end = len(self.text) - self._holdback()
        delta = self.text[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        tokens = self.seq.output_token_ids
        delta_tokens = tokens[self.emitted_tokens:]
        self.emitted_tokens = len(tokens)
        logprobs = all_logprobs = None
        if self.seq.params.logprobs is not None:
            # The whole list only once finished: copying it every step would cost O(n^2) on a long stream.
            all_logprobs = list(self.all_logprobs) if self.seq.is_finished else None
            logprobs = self.all_logprobs[self.emitted_logprobs:]
            self.emitted_logprobs = len(self.all_logprobs)
        return CompletionOutput(
            index=self.seq.index, text=self.text[:self.emitted], token_ids=list(tokens), delta_text=delta,
            delta_token_ids=delta_tokens, delta_logprobs=logprobs, logprobs=all_logprobs,
            finish_reason=self.seq.finish_reason, stop_reason=self.seq.stop_reason, error=self.seq.error,
        )


class RequestState:
    def __init__(self, request_id: str, prompt_token_ids: list[int], completions: list[CompletionState]) -> None:
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.completions = completions

    @property
    def finished(self) -> bool:
        return all(c.seq.is_finished for c in self.completions)

    def output(self) -> RequestOutput:
        return RequestOutput(
            request_id=self.request_id, prompt_token_ids=self.prompt_token_ids,
            outputs=[c.take_output() for c in self.completions], finished=self.finished,
            num_cached_tokens=min(c.seq.num_cached_tokens for c in self.completions),
        )
