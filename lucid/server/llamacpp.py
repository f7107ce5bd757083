"""llama.cpp's native endpoints on lucid: POST /infill (editor tab completion) and POST /completion.

The responses carry llama.cpp's fields (content, stop, tokens_cached, truncated, timings ...); streams are
`data: {json}` frames without OpenAI's `[DONE]`, as llama-server sends them. n_cmpl completions share one engine
request, so the prompt is computed once; successive keystrokes reuse the KV of their common prefix (prefix cache),
which `timings.cache_n` reports.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from lucid.engine.outputs import RequestOutput
from lucid.server import sse
from lucid.server.errors import bad_request
from lucid.server.fim import FimTokens, fim_cache_reuse, fim_stop_ids, no_fim_message, render_infill
from lucid.server.generation import check_finished, generate, max_model_len, start_all, until_disconnect
from lucid.server.llamacpp_protocol import InfillRequest, LlamaCppRequest
from lucid.server.llamacpp_slots import CompletionSlot, Limits
from lucid.server.protocol import parse_request
from lucid.server.request_params import check_token_ids, resolve_max_tokens
from lucid.server.state import ServerState

if TYPE_CHECKING:
    from lucid.engine.async_engine import AsyncEngine


def build_router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["llama.cpp"])

    @router.post("/infill")
    async def infill(request: Request) -> Response:
        """Fill in the middle (llama.cpp's /infill, as llama.vscode and llama.vim call it)."""
        req = await parse_request(request, InfillRequest)
        engine = state.require_engine()
        tokens = FimTokens.find(engine.tokenizer)
        if tokens is None:
            raise bad_request(no_fim_message(engine.tokenizer), param="input_prefix")
        fim = render_infill(engine.tokenizer, tokens, req.input_prefix, req.input_suffix, req.prompt,
                            req.extra_chunks(), n_ctx=max_model_len(engine), n_predict=req.n_predict)
        return await _complete(request, state, engine, req, fim.token_ids, fim.truncated)

    @router.post("/completion")
    async def completion(request: Request) -> Response:
        """Complete a prompt (llama.cpp's native /completion); text prompts may hold special tokens."""
        req = await parse_request(request, LlamaCppRequest)
        engine = state.require_engine()
        return await _complete(request, state, engine, req, _prompt_ids(engine, req.prompt), False)

    return router


def _prompt_ids(engine: AsyncEngine, prompt: str | list[int] | None) -> list[int]:
    tokenizer = engine.tokenizer
    if isinstance(prompt, list):
        check_token_ids(prompt, engine.model_config.vocab_size, "prompt")
        ids = list(prompt)
    else:
        bos = [tokenizer.bos_token_id] if tokenizer.adds_bos and tokenizer.bos_token_id is not None else []
        ids = bos + tokenizer.encode(prompt or "")
    if not ids:
        raise bad_request("prompt must not be empty", param="prompt")
    return ids


async def _complete(request: Request, state: ServerState, engine: AsyncEngine, req: LlamaCppRequest,
                    prompt_ids: list[int], truncated: bool) -> Response:
    warm_only = req.n_predict == 0  # evaluate the prompt into the prefix cache; one token is the least a step makes
    requested = 1 if warm_only else (None if req.n_predict < 0 else req.n_predict)
    max_tokens = resolve_max_tokens(requested, None, len(prompt_ids), max_model_len(engine), "prompt")
    params = req.sampling_params(max_tokens, fim_stop_ids(engine.tokenizer, prompt_ids),
                                 engine.model_config.vocab_size)
    # As in llama-server, K/V is reused at shifted positions only for a request that lets its prompt be cached.
    reuse = state.settings.cache_reuse if req.cache_prompt is not False else 0
    params.cache_reuse = fim_cache_reuse(engine.tokenizer, prompt_ids, reuse)
    # Like llama-server, which serves one model, answer whatever `model` an editor names (llama.vscode sends its
    # own setting), echoing the served name.
    request_id = f"cmpl-{uuid.uuid4().hex}"
    run = _Run(state.served_names[0], req, params, prompt_ids, truncated, warm_only,
               cut=lambda index: engine.abort_completion(request_id, index))
    gen = generate(state, engine, prompt_ids, params, request_id)
    [first] = await start_all(request, [gen])
    run.first_token_at = time.perf_counter()
    if req.stream:
        return StreamingResponse(run.stream(first, gen), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await until_disconnect(request, run.drain(first, gen))
    results = [run.final(slot) for slot in run.slots]
    return JSONResponse(results[0] if len(results) == 1 else results)


class _Run:
    """One llama.cpp-style request in flight: its completions (slots), timings and response objects."""

    def __init__(self, model: str, req: LlamaCppRequest, params: Any, prompt_ids: list[int], truncated: bool,
                 warm_only: bool, cut: Callable[[int], None]) -> None:
        self.model = model
        self.req = req
        self.params = params
        self.prompt_ids = prompt_ids
        self.truncated = truncated
        self.warm_only = warm_only
        self.started = time.perf_counter()
        self.first_token_at = self.started
        self.finished_at: float | None = None
        self.cached = 0
        self.cut = cut   # stops the engine's row of a completion a limit ended while the others go on
        self.cut_slots: set[int] = set()
        limits = Limits(req.n_indent, req.t_max_predict_ms)
        self.slots = [CompletionSlot(i, limits) for i in range(params.n)]

    def _take(self, out: RequestOutput) -> None:
        self.cached = out.num_cached_tokens
        generating_ms = (time.perf_counter() - self.first_token_at) * 1e3
        for c in out.outputs:
            if c.index in self.cut_slots:
                continue    # ended here; the engine's "abort" for it is this server's own
            check_finished(c)
            if not self.warm_only:
                slot = self.slots[c.index]
                slot.update(c, generating_ms)
                if slot.done and c.finish_reason is None and not out.finished:
                    self.cut_slots.add(c.index)
                    self.cut(c.index)   # an editor limit cut it: its row leaves the batch
        if self.warm_only or all(s.done for s in self.slots):
            for slot in self.slots:
                slot.done = True
                slot.stop_type = "limit" if self.warm_only else slot.stop_type
            self.finished_at = time.perf_counter()

    async def drain(self, first: RequestOutput, gen: AsyncIterator[RequestOutput]) -> None:
        """Read outputs until every completion is done; closing the generator aborts what the limits cut short."""
        try:
            out = first
            while True:
                self._take(out)
                if self.finished_at is not None or out.finished:
                    break
                out = await anext(gen)
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
        self.finished_at = self.finished_at or time.perf_counter()

    async def stream(self, first: RequestOutput, gen: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
        reported: set[int] = set()
        try:
            out: RequestOutput | None = first
            while out is not None:
                self._take(out)
                for slot in self.slots:
                    if slot.index in reported:
                        continue
                    delta = slot.take_delta()
                    if delta:
                        yield sse.event({"index": slot.index, "content": delta, "tokens": [], "stop": False,
                                         "id_slot": slot.index, "tokens_predicted": slot.tokens_predicted,
                                         "tokens_evaluated": len(self.prompt_ids)})
                    if slot.done:
                        reported.add(slot.index)
                        self.finished_at = self.finished_at or time.perf_counter()
                        yield sse.event({**self.final(slot), "content": ""})
                if len(reported) == len(self.slots) or out.finished:
                    break
                out = await anext(gen, None)
        except Exception as exc:  # noqa: BLE001 - reported in the stream itself, as llama-server does
            yield sse.error_event(exc)
        finally:
            await gen.aclose()  # type: ignore[attr-defined]

    def final(self, slot: CompletionSlot) -> dict[str, Any]:
        """llama.cpp's final result object for one completion."""
        end = self.finished_at or time.perf_counter()
        predicted = 0 if self.warm_only else slot.tokens_predicted
        prompt_n = len(self.prompt_ids) - self.cached
        prompt_ms = (self.first_token_at - self.started) * 1e3
        predicted_ms = (end - self.first_token_at) * 1e3
        return {
            "index": slot.index, "content": "" if self.warm_only else slot.text, "tokens": [],
            "id_slot": slot.index, "stop": True, "model": self.model,
            "tokens_predicted": predicted, "tokens_evaluated": len(self.prompt_ids),
            "generation_settings": self.req.settings(self.params), "has_new_line": slot.has_new_line,
            "truncated": self.truncated, "stop_type": slot.stop_type, "stopping_word": slot.stopping_word,
            # what the KV cache holds for this completion now: its prompt and what it generated (llama.cpp's)
            "tokens_cached": len(self.prompt_ids) + predicted,
            "timings": {
                "cache_n": self.cached, "prompt_n": prompt_n, "prompt_ms": prompt_ms,
                "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
                "prompt_per_second": prompt_n / prompt_ms * 1e3 if prompt_ms > 0 else 0.0,
                "predicted_n": predicted, "predicted_ms": predicted_ms,
                "predicted_per_token_ms": predicted_ms / predicted if predicted else 0.0,
                "predicted_per_second": predicted / predicted_ms * 1e3 if predicted_ms > 0 else 0.0,
            },
        }
