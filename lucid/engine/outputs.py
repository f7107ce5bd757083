"""What the engine hands back to its callers (API, server, CLI) after each step. Plain data, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TopLogprob:
    token_id: int
    token: str          # the token's text as the tokenizer's vocabulary spells it, decoded to a string
    logprob: float


@dataclass
class TokenLogprob:
    """The raw model distribution's log-probability of one generated token (before temperature,
    top-k/top-p and penalties, as OpenAI and vLLM report it), and its top alternatives."""

    token_id: int
    token: str
    logprob: float
    top: list[TopLogprob] = field(default_factory=list)
    drafted: bool = False   # speculative decoding: an n-gram draft the verify step kept (not sampled on its own)


@dataclass
class CompletionOutput:
    """One of a request's n completions, as of the latest step."""

    index: int
    text: str = ""                                   # full text so far (stop strings excluded)
    token_ids: list[int] = field(default_factory=list)
    delta_text: str = ""                             # text added by the latest step
    delta_token_ids: list[int] = field(default_factory=list)
    delta_logprobs: list[TokenLogprob] | None = None  # logprobs of delta_token_ids (when requested)
    logprobs: list[TokenLogprob] | None = None        # logprobs of every token, once finished (when requested)
    finish_reason: str | None = None                 # "stop" | "length" | "abort" | "error"
    stop_reason: int | str | None = None             # the stop token id or stop string that ended it
    error: str | None = None                         # set with finish_reason "error"

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    num_cached_tokens: int = 0      # prompt tokens served from the prefix cache


@dataclass
class EngineStats:
    num_running: int
    num_waiting: int
    num_used_blocks: int
    num_total_blocks: int
    num_preemptions: int = 0
    num_steps: int = 0
    num_draft_tokens: int = 0       # speculative decoding: tokens drafted, and of them kept
    num_accepted_tokens: int = 0
    num_reused_tokens: int = 0      # prompt tokens whose K/V was copied from other positions (engine/kv_reuse.py)

    @property
    def kv_usage(self) -> float:
        return self.num_used_blocks / self.num_total_blocks if self.num_total_blocks else 0.0
