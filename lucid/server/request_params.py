"""From a parsed request to what the engine takes: SamplingParams (validated by SamplingParams itself) and limits."""

from __future__ import annotations

from lucid.errors import SamplingParamsError
from lucid.sampling_params import SamplingParams
from lucid.server.errors import bad_request, context_length_exceeded
from lucid.server.protocol import ChatCompletionRequest, SamplingFields

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


def resolve_max_tokens(requested: int | None, default: int | None, prompt_tokens: int, max_model_len: int,
                       prompt_param: str = "messages") -> int:
    """The explicit token budget of one request. An omitted value takes `default` (None: the rest of the context)
    clipped to the room left; an explicit one that does not fit is a 400 that gives both numbers (and names
    `prompt_param`, the field the prompt came in)."""
    room = max_model_len - prompt_tokens
    if requested is None:
        if room < 1:
            raise context_length_exceeded(max_model_len, prompt_tokens, None, prompt_param)
        return room if default is None else min(default, room)
    if requested < 1:
        raise bad_request(f"max_tokens must be at least 1, got {requested}", param="max_tokens")
    if prompt_tokens + requested > max_model_len:
        raise context_length_exceeded(max_model_len, prompt_tokens, requested, prompt_param)
    return requested


def check_token_ids(ids: list[int], vocab_size: int, param: str) -> None:
    for token_id in ids:
        if not 0 <= token_id < vocab_size:
            raise bad_request(f"{param}: token id {token_id} is outside the vocabulary [0, {vocab_size})",
                              param=param)


def build_sampling_params(req: SamplingFields, *, max_tokens: int, logprobs: int | None, vocab_size: int,
                          logprobs_param: str = "logprobs") -> SamplingParams:
    """SamplingParams for a request; its own range checks turn into a 400 naming the field."""
    try:
        params = SamplingParams(
            n=req.n if req.n is not None else 1,
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            min_p=req.min_p if req.min_p is not None else 0.0,
            repetition_penalty=req.repetition_penalty,
            presence_penalty=req.presence_penalty if req.presence_penalty is not None else 0.0,
            frequency_penalty=req.frequency_penalty if req.frequency_penalty is not None else 0.0,
            logit_bias={int(k): v for k, v in (req.logit_bias or {}).items()},
            seed=req.seed,
            max_tokens=max_tokens,
            min_tokens=req.min_tokens if req.min_tokens is not None else 0,
            stop=req.stop if req.stop is not None else [],
            stop_token_ids=req.stop_token_ids or [],
            ignore_eos=bool(req.ignore_eos),
            logprobs=logprobs,
            skip_special_tokens=req.skip_special_tokens is not False,
        )
        params.validate(vocab_size=vocab_size)
    except SamplingParamsError as exc:
        param = logprobs_param if exc.param == "logprobs" else exc.param
        message = str(exc).replace("logprobs:", f"{logprobs_param}:", 1) if exc.param == "logprobs" else str(exc)
        raise bad_request(message, param=param) from None
    return params


def refuse_unsupported_chat(req: ChatCompletionRequest) -> None:
    """Fields lucid cannot honour yet, and whose silent loss would mislead the client, are a clear 400."""
    if req.top_logprobs and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs set to true.", param="top_logprobs")
