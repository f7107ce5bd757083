"""The request bodies of llama.cpp's native endpoints (/completion, /infill) as lucid accepts them.

Field names, defaults and limits follow llama.cpp's server (tools/server), so editors built for it (llama.vscode,
llama.vim, Continue's llama.cpp provider, Tabby) work unchanged. Fields it has that lucid cannot honour are refused
with a 400 when set; those that only steer llama.cpp's own machinery (slots, sampler order) are accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from lucid.errors import SamplingParamsError
from lucid.sampling_params import SamplingParams
from lucid.server.errors import bad_request
from lucid.server.fim import EXTRA_FILE, ExtraChunk
from lucid.server.protocol import Number, TokenId, _Request

MAX_CMPL = 4  # llama-server's default number of parallel slots, which bounds its n_cmpl the same way

# llama.cpp's sampling defaults (common/common.h), used where a request leaves a field out.
DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}


class LlamaCppRequest(_Request):
    """/completion's body; /infill adds the FIM fields."""

    model: StrictStr | None = None
    prompt: StrictStr | list[TokenId] | None = None
    n_predict: StrictInt = -1                     # -1: until EOS or the context ends; 0: only evaluate the prompt
    n_cmpl: StrictInt | None = None
    n: StrictInt | None = None                    # llama.cpp's alias of n_cmpl
    stream: StrictBool = False
    stop: StrictStr | list[StrictStr] | None = None
    temperature: Number | None = None
    top_k: StrictInt | None = None
    top_p: Number | None = None
    min_p: Number | None = None
    seed: StrictInt | None = None                 # -1: random
    repeat_penalty: Number | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    ignore_eos: StrictBool = False
    n_indent: StrictInt = Field(0, ge=0)          # stop at a new line indented less than this
    t_max_predict_ms: StrictInt = -1              # stop at a new line once generation took longer than this
    # Accepted and ignored: lucid caches every prompt's blocks, has no slots, and samples in its own fixed order.
    cache_prompt: StrictBool | None = None
    id_slot: StrictInt | None = None
    samplers: Any = None
    t_max_prompt_ms: StrictInt | None = None
    # Refused when set: lucid cannot honour them, and dropping them silently would mislead.
    n_probs: StrictInt = 0
    grammar: StrictStr | None = None
    json_schema: dict[str, Any] | None = None
    lora: list[Any] | None = None
    logit_bias: Any = None

    @model_validator(mode="after")
    def _supported(self) -> LlamaCppRequest:
        if self.n_probs:
            raise ValueError("n_probs (token probabilities) is not supported by lucid's /completion; use "
                             "/v1/completions with logprobs")
        if self.grammar or self.json_schema:
            raise ValueError("grammar and json_schema (constrained sampling) are not supported yet")
        if self.lora:
            raise ValueError("lora adapters are not supported")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported on this endpoint; use /v1/completions")
        if self.n_predict < -1:
            raise ValueError(f"n_predict must be -1 (no limit), 0 (only evaluate the prompt) or more, "
                             f"got {self.n_predict}")
        return self

    @property
    def completions(self) -> int:
        """n_cmpl (or n), checked as llama.cpp checks it, with its message (llama.vscode recognises it)."""
        value = self.n_cmpl if self.n_cmpl is not None else (self.n if self.n is not None else 1)
        if not 1 <= value <= MAX_CMPL:
            raise bad_request(f"Field 'n_cmpl': Value must be between 1 <= value <= {MAX_CMPL}, but got {value}",
                              param="n_cmpl")
        return value

    def sampling_params(self, max_tokens: int, stop_token_ids: list[int], vocab_size: int) -> SamplingParams:
        def pick(name: str, value: Any) -> Any:
            return DEFAULTS[name] if value is None else value

        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        try:
            params = SamplingParams(
                n=self.completions, temperature=pick("temperature", self.temperature),
                top_k=pick("top_k", self.top_k), top_p=pick("top_p", self.top_p), min_p=pick("min_p", self.min_p),
                repetition_penalty=pick("repeat_penalty", self.repeat_penalty),
                presence_penalty=self.presence_penalty or 0.0, frequency_penalty=self.frequency_penalty or 0.0,
                seed=None if self.seed is None or self.seed == -1 else self.seed, max_tokens=max_tokens,
                stop=[s for s in stop if s], stop_token_ids=stop_token_ids, ignore_eos=self.ignore_eos)
            params.validate(vocab_size=vocab_size)
        except SamplingParamsError as exc:
            name = {"repetition_penalty": "repeat_penalty", "n": "n_cmpl"}.get(exc.param or "", exc.param)
            raise bad_request(str(exc).replace(f"{exc.param}:", f"{name}:", 1), param=name) from None
        return params

    def settings(self, params: SamplingParams) -> dict[str, Any]:
        """llama.cpp's `generation_settings`: the parameters the completion actually used."""
        return {"n_predict": self.n_predict, "seed": params.seed if params.seed is not None else -1,
                "temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p,
                "min_p": params.min_p, "repeat_penalty": params.repetition_penalty,
                "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
                "stop": params.stop, "n_indent": self.n_indent, "t_max_predict_ms": self.t_max_predict_ms,
                "ignore_eos": params.ignore_eos, "stream": self.stream, "n_cmpl": params.n}


class InfillRequest(LlamaCppRequest):
    """/infill: the text before the cursor, the text after it, and context from other files."""

    prompt: StrictStr = ""                         # the current line up to the cursor, appended to the prefix
    input_prefix: StrictStr
    input_suffix: StrictStr
    input_extra: list[Any] = Field(default_factory=list)

    @field_validator("input_extra", mode="before")
    @classmethod
    def _chunks(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError('"input_extra" must be an array of {"filename": string, "text": string}')
        for chunk in value:
            if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
                raise ValueError('extra_context chunk must contain a "text" field with a string value')
            if "filename" in chunk and not isinstance(chunk["filename"], str):
                raise ValueError('extra_context chunk\'s "filename" field must be a string')
        return value

    def extra_chunks(self) -> list[ExtraChunk]:
        return [ExtraChunk(c["text"], c.get("filename", EXTRA_FILE)) for c in self.input_extra]
