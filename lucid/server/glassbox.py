"""The glass box's HTTP side: one token's logit lens and attention (POST /glassbox/token), a generation forked at
any token (POST /glassbox/fork, streamed), and the engine at work (GET /glassbox/engine, polled by /engine).

The server never touches tensors: the probe, the lens and the attention view are computed on the engine thread
between two steps (`AsyncEngine.call`, lucid.glassbox.engine_looks) and come back as plain data."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import Field, StrictFloat, StrictInt, model_validator

from lucid.errors import PoolBusyError
from lucid.glassbox import engine_looks
from lucid.sampling_params import SamplingParams
from lucid.server import sse
from lucid.server.errors import APIError, bad_request
from lucid.server.generation import generate, max_model_len
from lucid.server.glassbox_ids import ids_from_bytes
from lucid.server.logprobs import chat_logprobs
from lucid.server.openapi import ERROR_RESPONSES, request_body
from lucid.server.protocol import MAX_MESSAGES, ChatMessage, TokenId, _Request, parse_request
from lucid.server.request_params import check_token_ids
from lucid.server.serving_chat import render_prompt
from lucid.server.state import ServerState

CALL_TIMEOUT = 120.0     # seconds a look inside may wait for the engine thread
TokenBytes = list[StrictInt]


class SequenceRequest(_Request):
    """A sequence of tokens: `token_ids` as they are, or a conversation (`messages`, rendered through the chat
    template with the generation prompt) followed by the answer's tokens as their logprobs `bytes`."""

    token_ids: list[TokenId] | None = None
    messages: list[ChatMessage] | None = Field(None, max_length=MAX_MESSAGES)
    completion: list[TokenBytes] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_input(self) -> SequenceRequest:
        if (self.token_ids is None) == (self.messages is None):
            raise ValueError("give either token_ids or messages (with completion)")
        return self


class TokenRequest(SequenceRequest):
    """Explain the sequence's last token: the lens of the position before it, and where that position looked."""

    top: StrictInt = Field(3, ge=1, le=20)


class ForkRequest(SequenceRequest):
    """Continue generation from the sequence (whose last token is usually an alternative picked in the page)."""

    max_tokens: StrictInt = Field(256, ge=1)
    temperature: StrictFloat = Field(0.0, ge=0.0, le=2.0)
    top_p: StrictFloat = Field(1.0, gt=0.0, le=1.0)
    seed: StrictInt | None = None
    top_logprobs: StrictInt = Field(5, ge=0, le=20)


GLASSBOX_BODIES = [TokenRequest, ForkRequest]   # their schemas go into /openapi.json


async def _sequence(req: SequenceRequest, state: ServerState) -> tuple[list[int], int]:
    """The token ids, and how many of them are the prompt (the rest were generated)."""
    engine = state.require_engine()
    if req.token_ids is not None:
        ids = list(req.token_ids)
        prompt_len = len(ids)
    else:
        ids = render_prompt(engine, req.messages or [], True)
        prompt_len = len(ids)
        ids += await ids_from_bytes(engine.tokenizer, req.completion, "completion")
    check_token_ids(ids, engine.model_config.vocab_size, "token_ids")  # both ends: a negative one too
    if len(ids) > max_model_len(engine):
        raise bad_request(f"the sequence has {len(ids)} tokens, over this model's {max_model_len(engine)}",
                          param="token_ids", code="context_length_exceeded")
    return ids, prompt_len


async def _on_engine(state: ServerState, fn: Any) -> Any:
    try:
        return await asyncio.wait_for(state.require_engine().call(fn), CALL_TIMEOUT)
    except PoolBusyError as exc:
        raise APIError(503, str(exc), type_="service_unavailable") from None
    except TimeoutError:
        raise APIError(503, "the engine did not get to this in time; try again", type_="service_unavailable") \
            from None


async def _fork_frames(state: ServerState, ids: list[int], req: ForkRequest) -> AsyncIterator[str]:
    engine = state.require_engine()
    params = SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                            logprobs=req.top_logprobs)
    gen = generate(state, engine, ids, params, f"fork-{uuid.uuid4().hex}")
    announced = False
    try:
        async for out in gen:
            if not announced:  # the engine says how much of the prefix came from the prefix cache
                yield sse.event({"fork": {"prompt_tokens": len(ids), "reused_tokens": out.num_cached_tokens,
                                          "computed_tokens": len(ids) - out.num_cached_tokens}})
                announced = True
            c = out.outputs[0]
            if c.error:
                raise APIError(500, c.error, type_="internal_error")
            if c.delta_text or c.delta_logprobs or c.finish_reason:
                yield sse.event({"choices": [{
                    "index": 0, "delta": {"content": c.delta_text} if c.delta_text else {},
                    "logprobs": chat_logprobs(c.delta_logprobs or [], engine.tokenizer, req.top_logprobs),
                    "finish_reason": c.finish_reason}]})
    finally:
        await gen.aclose()


def install_glassbox(app: FastAPI, state: ServerState, static_dir: Any) -> None:
    @app.post("/glassbox/token", tags=["glass box"], responses=ERROR_RESPONSES,
              openapi_extra=request_body(TokenRequest))
    async def explain_token(request: Request) -> JSONResponse:
        """The logit lens of the sequence's last token (top tokens and its rank and probability after the embedding
        and after every layer) and the attention of the query that chose it, per layer and head."""
        req = await parse_request(request, TokenRequest)
        ids, prompt_len = await _sequence(req, state)
        if len(ids) < 2:
            raise bad_request("at least two tokens are needed: a context and the token to explain", param="token_ids")
        look = partial(engine_looks.explain_token, ids=ids, prompt_len=prompt_len, top=req.top)
        return JSONResponse(await _on_engine(state, look))

    @app.post("/glassbox/fork", tags=["glass box"], responses=ERROR_RESPONSES,
              openapi_extra=request_body(ForkRequest))
    async def fork(request: Request) -> Response:
        """Generate on from the given sequence, streamed as server-sent events: first `{"fork": {prompt_tokens,
        reused_tokens, computed_tokens}}`, then chat-shaped chunks with logprobs, then `[DONE]`."""
        req = await parse_request(request, ForkRequest)
        ids, _ = await _sequence(req, state)
        if not ids:
            raise bad_request("the sequence is empty", param="token_ids")
        return sse.event_stream(_fork_frames(state, ids, req))

    @app.get("/glassbox/engine", tags=["glass box"], responses=ERROR_RESPONSES)
    async def engine_view(after: int = 0) -> JSONResponse:
        """Steps recorded since step record `after`, and the KV pool now. Polling keeps the recorder on; it stops
        by itself a few seconds after the last poll."""
        state.require_engine()
        look = partial(engine_looks.engine_view, after=after)
        # The name clients send (--served-model-name), not the engine's own (a folder's name, say).
        return JSONResponse(await _on_engine(state, look) | {"model": state.served_names[0]})

    page = static_dir / "engine.html"

    @app.get("/engine", include_in_schema=False)
    async def engine_page() -> Response:
        return FileResponse(page)
