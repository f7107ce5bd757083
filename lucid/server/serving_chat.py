"""POST /v1/chat/completions: messages -> chat template -> token ids -> engine -> OpenAI chat response or stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import jinja2
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from lucid.engine.outputs import RequestOutput
from lucid.server import sse
from lucid.server.errors import bad_request
from lucid.server.generation import check_finished, collect_all, generate, max_model_len, start_all, until_disconnect
from lucid.server.logprobs import chat_logprobs
from lucid.server.protocol import ChatCompletionRequest, ChatMessage, parse_request
from lucid.server.request_params import build_sampling_params, refuse_unsupported_chat, resolve_max_tokens
from lucid.server.state import ServerState
from lucid.server.structured_request import (
    compile_constraint,
    legacy_guided,
    pick_one,
    response_format_spec,
    structured_outputs_spec,
)
from lucid.server.tool_streaming import ToolCallDeltas, tool_message
from lucid.server.tools import ChatTools, chat_tools
from lucid.structured.tool_grammar import tags_are_tokens

if TYPE_CHECKING:
    from lucid.engine.async_engine import AsyncEngine


def render_prompt(engine: AsyncEngine, messages: list[ChatMessage], add_generation_prompt: bool,
                  tools: list[dict[str, Any]] | None = None) -> list[int]:
    """The token ids of the conversation as the model's chat template writes it (with the tools, through the
    template's `tools` variable, as transformers passes them); template errors are the client's."""
    try:
        text = engine.tokenizer.apply_chat_template([m.for_template() for m in messages],
                                                    add_generation_prompt=add_generation_prompt, tools=tools)
    except (ValueError, jinja2.TemplateError) as exc:
        raise bad_request(f"The chat template rejected these messages: {exc}", param="messages") from None
    return engine.tokenizer.encode(text)


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}  # OpenAI's field: prefix-cache hits


async def create_chat_completion(request: Request, state: ServerState) -> Response:
    req = await parse_request(request, ChatCompletionRequest)
    engine = state.require_engine()
    model = state.check_model(req.model)
    refuse_unsupported_chat(req)
    tools = chat_tools(req)
    tag_tokens = tags_are_tokens(engine.tokenizer)
    spec = pick_one(tools.grammar(tag_tokens), response_format_spec(req.response_format),
                    structured_outputs_spec(req.structured_outputs or legacy_guided(req)))
    spec = spec or tools.no_call_grammar(tag_tokens)
    prompt_ids = render_prompt(engine, req.messages, req.add_generation_prompt is not False, tools.template_tools())
    requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    max_tokens = resolve_max_tokens(requested, None, len(prompt_ids), max_model_len(engine))
    top_k = req.top_logprobs or 0
    params = build_sampling_params(req, max_tokens=max_tokens, logprobs=top_k if req.logprobs else None,
                                   vocab_size=engine.model_config.vocab_size, logprobs_param="top_logprobs")
    params.structured = await compile_constraint(engine, spec)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    gen = generate(state, engine, prompt_ids, params, request_id)
    [first] = await start_all(request, [gen])
    chat = _Chat(engine, request_id, model, int(time.time()), top_k if req.logprobs else None, tools)
    if req.stream:
        return sse.event_stream(chat.stream(first, gen, req.include_usage))
    [(final, logprobs)] = await until_disconnect(request, collect_all([first], [gen]))
    return JSONResponse(chat.response(final, logprobs))


class _Chat:
    """Builds the response objects of one chat request."""

    def __init__(self, engine: AsyncEngine, request_id: str, model: str, created: int, top_k: int | None,
                 tools: ChatTools) -> None:
        self.engine = engine
        self.tools = tools
        self.id = request_id
        self.model = model
        self.created = created
        self.top_k = top_k  # None: no logprobs requested

    def _logprobs(self, items: list | None) -> dict[str, Any] | None:
        if self.top_k is None:
            return None
        return chat_logprobs(items or [], self.engine.tokenizer, self.top_k)

    def response(self, final: RequestOutput, logprobs: list[list]) -> dict[str, Any]:
        choices = []
        for c in final.outputs:
            check_finished(c)
            message, called = {"role": "assistant", "content": c.text, "tool_calls": []}, False
            if self.tools.active:
                message, called = tool_message(c.text, self.tools.names, self.tools.parallel)
            choices.append({
                "index": c.index,
                "message": message,
                "logprobs": self._logprobs(logprobs[c.index]),
                "finish_reason": "tool_calls" if called and c.finish_reason == "stop" else c.finish_reason,
                "stop_reason": c.stop_reason,
            })
        completion_tokens = sum(len(c.token_ids) for c in final.outputs)
        usage = _usage(len(final.prompt_token_ids), completion_tokens, final.num_cached_tokens)
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": choices, "usage": usage}

    def _chunk(self, choices: list[dict[str, Any]], include_usage: bool, usage: dict | None = None) -> str:
        chunk: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                 "model": self.model, "choices": choices}
        if include_usage:  # OpenAI: every chunk carries `usage`, null except in the last one
            chunk["usage"] = usage
        return sse.event(chunk)

    async def stream(self, first: RequestOutput, gen: AsyncIterator[RequestOutput],
                     include_usage: bool) -> AsyncIterator[str]:
        """Role first (one chunk per choice), then content deltas, one finish_reason per choice, optional usage."""
        try:
            for c in first.outputs:
                yield self._chunk([{"index": c.index, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}], include_usage)
            completion_tokens = [0] * len(first.outputs)
            calls = ({c.index: ToolCallDeltas(self.tools.names, self.tools.parallel) for c in first.outputs}
                     if self.tools.active else {})
            reported: set[int] = set()  # choices whose finish_reason was sent: the engine may repeat them
            out = first
            while True:
                for c in out.outputs:
                    if c.index in reported:
                        continue
                    check_finished(c)
                    completion_tokens[c.index] = len(c.token_ids)
                    if not (c.delta_text or c.delta_logprobs or c.finish_reason):
                        continue  # e.g. half a UTF-8 character or a possible stop string, held back
                    deltas = [{"content": c.delta_text} if c.delta_text else {}]
                    finish_reason = c.finish_reason
                    if c.index in calls:  # tool markup never reaches `content`: the parser splits it out
                        parser = calls[c.index]
                        deltas = parser.feed(c.delta_text, bool(c.finish_reason)) or [{}]
                        if parser.num_calls and finish_reason == "stop":
                            finish_reason = "tool_calls"
                    for k, delta in enumerate(deltas):
                        last = k == len(deltas) - 1
                        if not (delta or last):
                            continue
                        choice: dict[str, Any] = {"index": c.index, "delta": delta,
                                                  "logprobs": self._logprobs(c.delta_logprobs) if last else None,
                                                  "finish_reason": finish_reason if last else None}
                        if last and c.finish_reason:
                            choice["stop_reason"] = c.stop_reason
                            reported.add(c.index)
                        if last and not (delta or choice["logprobs"] or finish_reason):
                            continue
                        yield self._chunk([choice], include_usage)
                if out.finished:
                    break
                try:
                    out = await anext(gen)
                except StopAsyncIteration:
                    break
            if include_usage:
                usage = _usage(len(first.prompt_token_ids), sum(completion_tokens), first.num_cached_tokens)
                yield self._chunk([], include_usage, usage)
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
