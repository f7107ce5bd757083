"""One completion of a llama.cpp-style request as it grows: its text, why it stopped, and llama.cpp's two editor
limits that the engine does not know about — `n_indent` and `t_max_predict_ms` — applied as the server sees text.

A completion that a limit ends is cut here and ignored from then on; the engine request is aborted once every
completion of it is done (all of them share one engine request, so that their prompt is computed once).
"""

from __future__ import annotations

from dataclasses import dataclass

from lucid.engine.outputs import CompletionOutput


@dataclass
class Limits:
    n_indent: int = 0              # > 0: a new line indented less than this ends the completion (cut before it)
    t_max_predict_ms: int = -1     # > 0: after this long generating, the next new line ends the completion


class CompletionSlot:
    def __init__(self, index: int, limits: Limits) -> None:
        self.index = index
        self.limits = limits
        self.text = ""
        self.sent = 0                    # characters of text already streamed
        self.tokens_predicted = 0
        self.done = False
        self.stop_type = "none"          # llama.cpp's: "eos", "word", "limit" (n_predict, n_indent, time)
        self.stopping_word = ""
        self.has_new_line = False
        self._checked_lines = 0          # new lines whose next line's indentation was judged

    def update(self, output: CompletionOutput, generating_ms: float) -> None:
        """Take the engine's latest state of this completion; `generating_ms` is the time since its first token."""
        if self.done:
            return
        before = len(self.text)
        self.text = output.text
        self.tokens_predicted = len(output.token_ids)
        if output.finish_reason is not None:
            self._finish(output)
        if "\n" in self.text[before:]:
            self.has_new_line = True
            if 0 < self.limits.t_max_predict_ms < generating_ms and not self.done:
                self.done, self.stop_type = True, "limit"
        self._check_indent()

    def _finish(self, output: CompletionOutput) -> None:
        self.done = True
        if output.finish_reason == "length":
            self.stop_type = "limit"
        elif isinstance(output.stop_reason, str):
            self.stop_type, self.stopping_word = "word", output.stop_reason
        else:
            self.stop_type = "eos"

    def _check_indent(self) -> None:
        """llama.cpp's rule: once a line after a new line has a non-blank character, it must be indented by at
        least n_indent blanks, or the completion ends there, keeping the new line and its blanks."""
        if self.limits.n_indent <= 0:
            return
        starts = [i + 1 for i, ch in enumerate(self.text) if ch == "\n"]
        for start in starts[self._checked_lines:]:
            end = start
            while end < len(self.text) and self.text[end] in " \t":
                end += 1
            if end == len(self.text):
                return  # only blanks so far: judge it when more text comes
            self._checked_lines += 1
            if end - start < self.limits.n_indent:
                self.text = self.text[:end]
                self.done, self.stop_type = True, "limit"
                return

    def take_delta(self) -> str:
        """Text not streamed yet (a cut never removes streamed text: it happens on the arrival of what it drops)."""
        delta = self.text[self.sent:]
        self.sent = len(self.text)
        return delta
