"""Ollama's API on lucid's port: /api/generate (with `suffix` for fill-in-the-middle, `raw`), /api/chat (with
`tools`), `format` on both (JSON mode or a JSON schema), /api/tags, /api/show, /api/version, /api/ps — for Open
WebUI and the many apps and agent frameworks that speak only Ollama.

Streams are NDJSON (one JSON object a line, Ollama's default); `stream: false` answers with one object. Durations
are nanoseconds, as Ollama reports them. Errors are `{"error": "..."}` (lucid.server.ollama_errors).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from lucid.engine.outputs import RequestOutput
from lucid.server import ollama_models
from lucid.server.errors import APIError, as_api_error
from lucid.server.fim import FimTokens, fim_cache_reuse, fim_stop_ids, render_file_level
from lucid.server.generation import check_finished, collect_all, generate, max_model_len, start_all, until_disconnect
from lucid.server.ollama_errors import OllamaRoute
from lucid.server.ollama_protocol import ChatRequest, GenerateRequest, OllamaMessage, bad
from lucid.server.ollama_tools import ToolCallStream, chat_tools, format_spec, tool_message
from lucid.server.protocol import parse_json, parse_model
from lucid.server.request_params import check_token_ids, resolve_max_tokens
from lucid.server.state import ServerState
from lucid.server.structured_request import compile_constraint

if TYPE_CHECKING:
    from lucid.engine.async_engine import AsyncEngine

OLLAMA_API_VERSION = "0.6.0"  # the Ollama release whose API this mirrors (clients gate features on it)
NDJSON = "application/x-ndjson"


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def build_router(state: ServerState) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Ollama"], route_class=OllamaRoute)

    @router.post("/generate")
    async def generate_(request: Request) -> Response:
        """Complete a prompt (chat template unless `raw`); with `suffix`, fill in the middle."""
        req = parse_model(parse_json(await request.body()), GenerateRequest)
        engine = state.require_engine()
        name = ollama_models.resolve_model(state, req.model)
        req.refuse_unsupported()
        if not req.prompt and not req.suffix:  # Ollama's way to (pre)load a model: it is loaded already
            return JSONResponse({"model": name, "created_at": now(), "response": "", "done": True,
                                 "done_reason": "load"})
        prompt_ids = _generate_prompt(engine, req, name)

        def chunks(delta: str, finished: bool) -> list[dict[str, Any]]:
            return [{"model": name, "created_at": now(), "response": delta, "done": False}] if delta else []

        def final(text: str, out: RequestOutput) -> dict[str, Any]:
            body: dict[str, Any] = {"model": name, "created_at": now(), "response": text, "done": True}
            if not req.raw:  # the conversation so far as token ids (Ollama's deprecated `context`)
                body["context"] = [*out.prompt_token_ids, *out.outputs[0].token_ids]
            return body

        return await _run(request, state, engine, req, prompt_ids, chunks, final)

    @router.post("/chat")
    async def chat(request: Request) -> Response:
        """The next assistant message of a conversation."""
        req = parse_model(parse_json(await request.body()), ChatRequest)
        engine = state.require_engine()
        name = ollama_models.resolve_model(state, req.model)
        req.refuse_unsupported()
        if not req.messages:
            return JSONResponse({"model": name, "created_at": now(), "message": {"role": "assistant", "content": ""},
                                 "done": True, "done_reason": "load"})
        tools = chat_tools(req.tools)
        prompt_ids = _chat_prompt(engine, req.messages, tools)
        names = {t["function"]["name"] for t in tools}
        calls = ToolCallStream(names) if tools else None

        def message_chunk(message: dict[str, Any]) -> dict[str, Any]:
            return {"model": name, "created_at": now(), "message": message, "done": False}

        def chunks(delta: str, finished: bool) -> list[dict[str, Any]]:
            if calls is None:
                return [message_chunk({"role": "assistant", "content": delta})] if delta else []
            content, completed = calls.feed(delta, finished)  # tool markup never reaches `content`
            out = [message_chunk({"role": "assistant", "content": content})] if content else []
            return out + [message_chunk({"role": "assistant", "content": "", "tool_calls": [call]})
                          for call in completed]

        def final(text: str, out: RequestOutput) -> dict[str, Any]:
            message = tool_message(text, names) if tools else {"role": "assistant", "content": text}
            return {"model": name, "created_at": now(), "message": message, "done": True}

        return await _run(request, state, engine, req, prompt_ids, chunks, final)

    @router.get("/tags")
    async def tags() -> JSONResponse:
        """The served model, under each served name."""
        return JSONResponse(await ollama_models.tags(state, state.require_engine()))

    @router.post("/show")
    async def show(request: Request) -> JSONResponse:
        """The model's details, GGUF header, chat template and capabilities."""
        body = parse_json(await request.body())
        name = body.get("model") or body.get("name") or ""
        if not isinstance(name, str):
            raise bad("model must be a string")
        engine = state.require_engine()
        ollama_models.resolve_model(state, name)
        return JSONResponse(await ollama_models.show(engine))

    @router.get("/ps")
    async def ps() -> JSONResponse:
        """The loaded model (lucid has one, loaded for as long as it runs)."""
        return JSONResponse(await ollama_models.running(state, state.require_engine()))

    @router.get("/version")
    async def version() -> JSONResponse:
        return JSONResponse({"version": OLLAMA_API_VERSION})

    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "HEAD"], include_in_schema=False)
    async def unsupported(rest: str) -> Response:
        raise APIError(404, f"lucid does not implement Ollama's /api/{rest}; it serves one model loaded at start "
                            "(see /api/tags), through /api/generate, /api/chat, /api/show and /api/ps")

    return router


def _generate_prompt(engine: AsyncEngine, req: GenerateRequest, name: str) -> list[int]:
    tokenizer = engine.tokenizer
    if req.suffix:
        tokens = FimTokens.find(tokenizer)
        if tokens is None:
            raise bad(f'"{name}" does not support insert')
        return render_file_level(tokenizer, tokens, req.prompt, req.suffix)
    if req.raw:  # the prompt as written, special tokens included (Continue sends FIM text this way)
        return tokenizer.encode(req.prompt)
    messages = ([OllamaMessage(role="system", content=req.system)] if req.system else [])
    ids = _chat_prompt(engine, [*messages, OllamaMessage(role="user", content=req.prompt)])
    if req.context:
        check_token_ids(req.context, engine.model_config.vocab_size, "context")
        ids = [*req.context, *ids]
    return ids


def _chat_prompt(engine: AsyncEngine, messages: list[OllamaMessage],
                 tools: list[dict[str, Any]] | None = None) -> list[int]:
    try:
        text = engine.tokenizer.apply_chat_template([m.for_template() for m in messages], add_generation_prompt=True,
                                                    tools=tools or None)
    except (ValueError, jinja2.TemplateError) as exc:
        raise bad(f"the chat template rejected these messages: {exc}") from None
    return engine.tokenizer.encode(text)


async def _run(request: Request, state: ServerState, engine: AsyncEngine, req: GenerateRequest | ChatRequest,
               prompt_ids: list[int], chunks: Callable[[str, bool], list[dict]],
               final: Callable[[str, RequestOutput], dict]) -> Response:
    """Generate, then answer with an NDJSON stream (`chunks` turns each text delta into the lines to send, given
    whether it is the last) or one object (`final`); both end with Ollama's counters."""
    started = time.perf_counter_ns()
    max_tokens = resolve_max_tokens(req.num_predict(), None, len(prompt_ids), max_model_len(engine), "prompt")
    params = req.sampling_params(max_tokens, engine.model_config.vocab_size,
                                 fim_stop_ids(engine.tokenizer, prompt_ids))
    params.cache_reuse = fim_cache_reuse(engine.tokenizer, prompt_ids, state.settings.cache_reuse)
    params.structured = await compile_constraint(engine, format_spec(req.format))
    gen = generate(state, engine, prompt_ids, params, f"ollama-{uuid.uuid4().hex}")
    [first] = await start_all(request, [gen])
    first_at = time.perf_counter_ns()

    def counters(out: RequestOutput) -> dict[str, Any]:
        end = time.perf_counter_ns()
        c = out.outputs[0]
        return {"done_reason": c.finish_reason, "total_duration": end - started, "load_duration": 0,
                "prompt_eval_count": len(prompt_ids), "prompt_eval_duration": first_at - started,
                "eval_count": len(c.token_ids), "eval_duration": end - first_at}

    if not req.stream:
        [(out, _)] = await until_disconnect(request, collect_all([first], [gen]))
        check_finished(out.outputs[0])
        return JSONResponse({**final(out.outputs[0].text, out), **counters(out)})

    async def lines() -> AsyncIterator[str]:
        try:
            out = first
            while True:
                c = out.outputs[0]
                check_finished(c)
                for body in chunks(c.delta_text, out.finished):
                    yield _line(body)
                if out.finished:
                    yield _line({**final("", out), **counters(out)})
                    return
                out = await anext(gen)
        except Exception as exc:  # noqa: BLE001 - a failure mid-stream is a last line, as Ollama writes it
            yield _line({"error": as_api_error(exc).message})
        finally:
            await gen.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(lines(), media_type=NDJSON)


def _line(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n"
