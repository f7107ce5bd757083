"""POST /tokenize and POST /detokenize, in vLLM's shapes."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from lucid.server.errors import bad_request
from lucid.server.generation import max_model_len
from lucid.server.protocol import DetokenizeRequest, TokenizeRequest, parse_request
from lucid.server.request_params import check_token_ids
from lucid.server.serving_chat import render_prompt
from lucid.server.state import ServerState


async def tokenize(request: Request, state: ServerState) -> JSONResponse:
    """`prompt` as is, or `messages` through the chat template -> {tokens, count, max_model_len}."""
    req = await parse_request(request, TokenizeRequest)
    engine = state.require_engine()
    state.check_model(req.model)
    if req.messages is not None:
        tokens = render_prompt(engine, req.messages, req.add_generation_prompt)
    else:
        tokens = engine.tokenizer.encode(req.prompt or "")
    return JSONResponse({"tokens": tokens, "count": len(tokens), "max_model_len": max_model_len(engine),
                         "token_strs": None})


async def detokenize(request: Request, state: ServerState) -> JSONResponse:
    req = await parse_request(request, DetokenizeRequest)
    engine = state.require_engine()
    state.check_model(req.model)
    check_token_ids(req.tokens, engine.model_config.vocab_size, "tokens")
    try:
        text = engine.tokenizer.decode(req.tokens, skip_special_tokens=False)
    except (ValueError, OverflowError, TypeError) as exc:  # ids in the model's padding rows, not the tokenizer's
        raise bad_request(f"these tokens cannot be decoded: {exc}", param="tokens") from None
    return JSONResponse({"prompt": text})
