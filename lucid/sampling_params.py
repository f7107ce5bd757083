"""SamplingParams: every knob of one request's decoding, validated once, here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from lucid.errors import SamplingParamsError
from lucid.structured.spec import GrammarSpec

MAX_N = 16
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 256
MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS_ENTRIES = 1024
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


@dataclass
class SamplingParams:
    """How to pick each next token. temperature 0 means greedy (argmax), as OpenAI clients expect.

    `None` for temperature / top_p means "the model's generation_config default, else 1.0" and is
    resolved by the engine with `with_defaults`.
    """

    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None            # 0 or -1: off
    min_p: float = 0.0
    repetition_penalty: float | None = None  # >1 discourages any token already in prompt or output
    presence_penalty: float = 0.0       # OpenAI: subtract once if the token appeared in the output
    frequency_penalty: float = 0.0      # OpenAI: subtract per occurrence in the output
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None         # None: no logprobs; k: the chosen token's and k alternatives
    skip_special_tokens: bool = True
    structured: GrammarSpec | None = None   # constrained decoding: JSON schema, regex, choice or grammar
    # Reuse K/V of runs of at least this many prompt tokens found at other positions in recent sequences (llama.cpp's
    # --cache-reuse; approximate, see engine/kv_reuse.py). 0: only the exact prefix cache. Editors' FIM requests.
    cache_reuse: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        self.logit_bias = {int(k): float(v) for k, v in (self.logit_bias or {}).items()}
        self.validate()

    def validate(self, vocab_size: int | None = None) -> None:
        """Raise SamplingParamsError naming the first bad field."""
        def bad(param: str, message: str) -> SamplingParamsError:
            return SamplingParamsError(f"{param}: {message}", param=param)

        if not isinstance(self.n, int) or not 1 <= self.n <= MAX_N:
            raise bad("n", f"must be an integer from 1 to {MAX_N}, got {self.n!r}")
        if self.temperature is not None and not 0.0 <= self.temperature <= 2.0:
            raise bad("temperature", f"must be between 0 and 2, got {self.temperature}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < -1):
            raise bad("top_k", f"must be -1, 0 (off) or a positive integer, got {self.top_k!r}")
        if not 0.0 <= self.min_p <= 1.0:
            raise bad("min_p", f"must be in [0, 1], got {self.min_p}")
        if self.repetition_penalty is not None and not 0.0 < self.repetition_penalty <= 2.0:
            raise bad("repetition_penalty", f"must be in (0, 2], got {self.repetition_penalty}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise bad(name, f"must be between -2 and 2, got {getattr(self, name)}")
        if len(self.logit_bias) > MAX_LOGIT_BIAS_ENTRIES:
            raise bad("logit_bias", f"at most {MAX_LOGIT_BIAS_ENTRIES} entries")
        for token_id, bias in self.logit_bias.items():
            if not -100.0 <= bias <= 100.0:
                raise bad("logit_bias", f"bias for token {token_id} must be between -100 and 100, got {bias}")
        if self.seed is not None and (not isinstance(self.seed, int) or not SEED_MIN <= self.seed <= SEED_MAX):
            raise bad("seed", f"must be an integer in [{SEED_MIN}, {SEED_MAX}], got {self.seed!r}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise bad("max_tokens", f"must be a positive integer, got {self.max_tokens!r}")
        if not isinstance(self.min_tokens, int) or self.min_tokens < 0:
            raise bad("min_tokens", f"must be a non-negative integer, got {self.min_tokens!r}")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise bad("min_tokens", f"({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise bad("stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(self.stop)}")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise bad("stop", "stop strings must be non-empty strings")
            if len(s) > MAX_STOP_STRING_CHARS:
                raise bad("stop", f"a stop string is at most {MAX_STOP_STRING_CHARS} characters")
        if not isinstance(self.cache_reuse, int) or self.cache_reuse < 0:
            raise bad("cache_reuse", f"must be a non-negative integer, got {self.cache_reuse!r}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise bad("logprobs", f"top logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.logprobs}")
        if vocab_size is not None:
            for name, ids in (("logit_bias", self.logit_bias.keys()), ("stop_token_ids", self.stop_token_ids)):
                for token_id in ids:
                    if not 0 <= token_id < vocab_size:
                        raise bad(name, f"token id {token_id} is outside the vocabulary [0, {vocab_size})")

    @property
    def greedy(self) -> bool:
        """True once resolved to temperature 0 (argmax)."""
        return self.temperature == 0.0

    def with_defaults(self, generation_config: dict[str, Any] | None) -> SamplingParams:
        """Fill the fields a request left unset (None) from the model's generation_config, else OpenAI's defaults."""
        gc = generation_config or {}

        def pick(value: Any, key: str, fallback: Any) -> Any:
            return value if value is not None else type(fallback)(gc.get(key, fallback) or fallback)

        temperature = self.temperature
        if temperature is None:
            temperature = float(gc.get("temperature", 1.0)) if gc.get("do_sample", True) else 0.0
        return replace(
            self,
            temperature=temperature,
            top_p=pick(self.top_p, "top_p", 1.0),
            top_k=pick(self.top_k, "top_k", 0),
            repetition_penalty=pick(self.repetition_penalty, "repetition_penalty", 1.0),
        )
