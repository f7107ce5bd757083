"""POST /v1/completions: one or several prompts (text or token ids) -> engine -> legacy completion response/stream.

Each prompt is its own engine request; choice `i * n + j` is completion j of prompt i, as OpenAI numbers them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from lucid.engine.outputs import CompletionOutput, RequestOutput
from lucid.server import sse
from lucid.server.errors import bad_request
from lucid.server.fim import fim_cache_reuse, fim_stop_ids, suffix_prompts
from lucid.server.generation import (
    check_finished,
    collect_all,
    generate,
    max_model_len,
    merge,
    start_all,
    until_disconnect,
)
from lucid.server.logprobs import completion_logprobs, next_offset
from lucid.server.protocol import CompletionRequest, parse_request
from lucid.server.request_params import (
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    build_sampling_params,
    check_token_ids,
    resolve_max_tokens,
)
from lucid.server.state import ServerState
from lucid.server.structured_request import compile_constraint, legacy_guided, structured_outputs_spec

if TYPE_CHECKING:
    from lucid.engine.async_engine import AsyncEngine

MAX_PROMPTS = 32  # prompts in one request; each becomes an engine request of its own


def prompt_token_ids(engine: AsyncEngine, prompt: Any) -> list[list[int]]:
    """The four prompt forms OpenAI accepts (text, texts, token ids, lists of token ids) as lists of token ids."""
    if isinstance(prompt, str):
        prompts: list[Any] = [prompt]
    elif prompt and isinstance(prompt[0], int):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise bad_request("prompt must not be empty", param="prompt")
    if len(prompts) > MAX_PROMPTS:
        raise bad_request(f"at most {MAX_PROMPTS} prompts per request, got {len(prompts)}", param="prompt")
    ids = [engine.tokenizer.encode_prompt(p) if isinstance(p, str) else list(p) for p in prompts]
    for one in ids:
        if not one:
            raise bad_request("prompt must not be empty", param="prompt")
        check_token_ids(one, engine.model_config.vocab_size, "prompt")
    return ids


async def create_completion(request: Request, state: ServerState) -> Response:
    req = await parse_request(request, CompletionRequest)
    engine = state.require_engine()
    model = state.check_model(req.model)
    if req.echo and req.logprobs is not None:
        raise bad_request("echo with logprobs needs prompt logprobs, which are not supported yet.", param="echo")
    # With `suffix`, lucid writes the fill-in-the-middle prompt (lucid.server.fim); FIM prompts stop at FIM tokens.
    if req.suffix is not None:
        prompts = suffix_prompts(engine.tokenizer, req.prompt, req.suffix)[:MAX_PROMPTS + 1]
        if len(prompts) > MAX_PROMPTS:
            raise bad_request(f"at most {MAX_PROMPTS} prompts per request", param="prompt")
    else:
        prompts = prompt_token_ids(engine, req.prompt)
    limit = max_model_len(engine)
    params = [build_sampling_params(req, max_tokens=resolve_max_tokens(req.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS,
                                                                       len(ids), limit, "prompt"),
                                    logprobs=req.logprobs, vocab_size=engine.model_config.vocab_size)
              for ids in prompts]
    for ids, p in zip(prompts, params, strict=True):
        p.stop_token_ids += [i for i in fim_stop_ids(engine.tokenizer, ids) if i not in p.stop_token_ids]
        p.cache_reuse = fim_cache_reuse(engine.tokenizer, ids, state.settings.cache_reuse)
    spec = await compile_constraint(engine, structured_outputs_spec(req.structured_outputs or legacy_guided(req)))
    for p in params:
        p.structured = spec
    request_id = f"cmpl-{uuid.uuid4().hex}"
    gens = [generate(state, engine, ids, p, f"{request_id}-{i}")
            for i, (ids, p) in enumerate(zip(prompts, params, strict=True))]
    firsts = await start_all(request, gens)
    echoes = [engine.tokenizer.decode(ids, skip_special_tokens=False) if req.echo else "" for ids in prompts]
    completion = _Completion(request_id, model, int(time.time()), params[0].n, req.logprobs, echoes)
    if req.stream:
        return sse.event_stream(completion.stream(firsts, gens, req.include_usage))
    results = await until_disconnect(request, collect_all(firsts, gens))
    return JSONResponse(completion.response(results))


class _Completion:
    """Builds the response objects of one completions request."""

    def __init__(self, request_id: str, model: str, created: int, n: int, top_k: int | None,
                 echoes: list[str]) -> None:
        self.id = request_id
        self.model = model
        self.created = created
        self.n = n
        self.top_k = top_k  # None: no logprobs requested
        self.echoes = echoes  # the prompt text each choice starts with ("" without echo)

    def _body(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": choices}

    def response(self, results: list[tuple[RequestOutput, list[list]]]) -> dict[str, Any]:
        choices = []
        prompt_tokens = completion_tokens = cached_tokens = 0
        for i, (final, logprobs) in enumerate(results):
            prompt_tokens += len(final.prompt_token_ids)
            cached_tokens += final.num_cached_tokens
            for c in final.outputs:
                check_finished(c)
                completion_tokens += len(c.token_ids)
                lp = None
                if self.top_k is not None:
                    lp = completion_logprobs(logprobs[c.index], self.top_k, len(self.echoes[i]))
                choices.append({"index": i * self.n + c.index, "text": self.echoes[i] + c.text, "logprobs": lp,
                                "finish_reason": c.finish_reason, "stop_reason": c.stop_reason})
        body = self._body(sorted(choices, key=lambda ch: ch["index"]))
        body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens,
                         "prompt_tokens_details": {"cached_tokens": cached_tokens}}  # prefix-cache hits
        return body

    def _choice(self, i: int, c: CompletionOutput, offsets: dict[int, int]) -> dict[str, Any] | None:
        """The streamed chunk's choice for this step of completion c of prompt i, or None when it has nothing."""
        index = i * self.n + c.index
        text = c.delta_text
        if index not in offsets:  # the choice's first chunk carries the echoed prompt
            text = self.echoes[i] + text
            offsets[index] = len(self.echoes[i])
        if not (text or c.delta_logprobs or c.finish_reason):
            return None
        lp = None
        if self.top_k is not None:
            lp = completion_logprobs(c.delta_logprobs or [], self.top_k, offsets[index])
            offsets[index] = next_offset(lp, offsets[index])
        choice = {"index": index, "text": text, "logprobs": lp, "finish_reason": c.finish_reason}
        if c.finish_reason:
            choice["stop_reason"] = c.stop_reason
        return choice

    async def stream(self, firsts: list[RequestOutput], gens: list[AsyncIterator[RequestOutput]],
                     include_usage: bool) -> AsyncIterator[str]:
        offsets: dict[int, int] = {}  # per choice: where its next token starts (legacy text_offset)
        reported: set[int] = set()    # choices whose finish_reason was sent
        completion_tokens: dict[int, int] = {}
        outputs = merge(firsts, gens)
        try:
            async for i, out in outputs:
                for c in out.outputs:
                    index = i * self.n + c.index
                    if index in reported:
                        continue
                    check_finished(c)
                    completion_tokens[index] = len(c.token_ids)
                    choice = self._choice(i, c, offsets)
                    if choice is None:
                        continue
                    if c.finish_reason:
                        reported.add(index)
                    chunk = self._body([choice])
                    if include_usage:
                        chunk["usage"] = None
                    yield sse.event(chunk)
            if include_usage:
                prompt_tokens = sum(len(f.prompt_token_ids) for f in firsts)
                generated = sum(completion_tokens.values())
                chunk = self._body([])
                chunk["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                                  "total_tokens": prompt_tokens + generated,
                                  "prompt_tokens_details": {"cached_tokens": sum(f.num_cached_tokens for f in firsts)}}
                yield sse.event(chunk)
        finally:
            await outputs.aclose()
