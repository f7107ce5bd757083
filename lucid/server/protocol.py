"""The OpenAI request bodies lucid accepts, as pydantic models, and the one function that parses them.

Types are strict (a string is not a number) and unknown fields are ignored, as OpenAI-compatible servers do.
Ranges of sampling values are not checked here: `SamplingParams` checks them, in one place.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from lucid.sampling_params import MAX_N, MAX_STOP_STRING_CHARS, MAX_STOP_STRINGS, MAX_TOP_LOGPROBS
from lucid.server.errors import APIError, bad_request, describe_validation_error

Number = StrictFloat  # accepts ints too, never strings or booleans
MAX_MESSAGES = 1024   # messages in one conversation: far more than any context holds, far less than a DoS


def documented(default: Any = None, **schema: Any) -> Any:
    """A field whose limits appear in /openapi.json (so clients and fuzzers see them) without being checked here:
    SamplingParams and the handlers check them, with messages that name the field."""
    return Field(default, json_schema_extra=schema)


TokenId = Annotated[StrictInt, Field(json_schema_extra={"minimum": 0})]  # and below the vocabulary size
StopString = Annotated[StrictStr, Field(json_schema_extra={"minLength": 1, "maxLength": MAX_STOP_STRING_CHARS})]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextPart(_Request):
    type: Literal["text"]
    text: StrictStr


def _without_null(schema: dict[str, Any]) -> None:
    """Document a field as not nullable (the handler still accepts null where OpenAI allows it)."""
    schema["anyOf"] = [option for option in schema["anyOf"] if option.get("type") != "null"]
    schema.pop("default", None)


class ChatMessage(_Request):
    # Documented as required: only an assistant message with tool_calls may leave it out (or null).
    model_config = ConfigDict(json_schema_extra={"required": ["role", "content"]})

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = Field(None, json_schema_extra=_without_null)
    name: StrictStr | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: StrictStr | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        # Checked before the union is tried, so a non-text part gets one clear message, not one per union member.
        for part in value if isinstance(value, list) else []:
            if isinstance(part, dict) and part.get("type") != "text":
                raise ValueError(f"content parts of type {part.get('type')!r} are not supported yet; only 'text' "
                                 "parts are")
        return value

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a '{self.role}' message needs 'content'")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content)
        return self.content or ""

    def for_template(self) -> dict[str, Any]:
        """The plain dict a chat template expects; 'developer' is OpenAI's newer name for 'system'."""
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role,
                                   "content": self.text()}
        for key in ("name", "tool_call_id"):
            if getattr(self, key) is not None:
                message[key] = getattr(self, key)
        if self.tool_calls is not None:
            message["tool_calls"] = [_call_for_template(call) for call in self.tool_calls]
        return message


def _call_for_template(call: dict[str, Any]) -> dict[str, Any]:
    """OpenAI sends a call's arguments as a JSON string; templates write them with `tojson`, as the object they
    stand for (as transformers users pass them), so the string is parsed back when it is valid JSON."""
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    try:
        arguments = json.loads(function["arguments"])
    except ValueError:
        return call
    return {**call, "function": {**function, "arguments": arguments}}


class StreamOptions(_Request):
    include_usage: StrictBool | None = False


class SamplingFields(_Request):
    """Fields shared by chat and completions (OpenAI's, then vLLM's extras)."""

    model: StrictStr | None = None
    max_tokens: StrictInt | None = documented(minimum=1)
    temperature: Number | None = documented(minimum=0, maximum=2)
    top_p: Number | None = documented(exclusiveMinimum=0, maximum=1)
    n: StrictInt | None = documented(minimum=1, maximum=MAX_N)
    stop: StopString | list[StopString] | None = documented(maxItems=MAX_STOP_STRINGS)
    seed: StrictInt | None = None
    presence_penalty: Number | None = documented(minimum=-2, maximum=2)
    frequency_penalty: Number | None = documented(minimum=-2, maximum=2)
    logit_bias: dict[str, Number] | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    top_k: StrictInt | None = None
    min_p: Number | None = None
    repetition_penalty: Number | None = None
    stop_token_ids: list[TokenId] | None = None
    ignore_eos: StrictBool | None = False
    min_tokens: StrictInt | None = documented(minimum=0)
    skip_special_tokens: StrictBool | None = True
    # vLLM's constrained decoding: {"json": schema} | {"regex": str} | {"choice": [str]} | {"grammar": EBNF/Lark},
    # and its older top-level spellings of the same.
    structured_outputs: dict[str, Any] | None = None
    guided_json: Any = None
    guided_regex: StrictStr | None = None
    guided_choice: list[StrictStr] | None = None
    guided_grammar: StrictStr | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_id_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"keys must be token ids, got {key!r}")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = documented(..., minItems=1, maxItems=MAX_MESSAGES)
    max_completion_tokens: StrictInt | None = documented(minimum=1)
    logprobs: StrictBool | None = False
    top_logprobs: StrictInt | None = documented(minimum=0, maximum=MAX_TOP_LOGPROBS)
    add_generation_prompt: StrictBool | None = True
    # Tools and JSON output (checked in detail by lucid.server.tools and lucid.server.structured_request).
    tools: list[Any] | None = documented(maxItems=128)
    tool_choice: Any = None
    parallel_tool_calls: StrictBool | None = None
    functions: list[Any] | None = documented(maxItems=128)    # legacy spelling of tools
    function_call: Any = None                                 # legacy spelling of tool_choice
    response_format: dict[str, Any] | None = None

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if not value:
            raise ValueError("at least one message is required")
        if len(value) > MAX_MESSAGES:
            raise ValueError(f"at most {MAX_MESSAGES} messages per request, got {len(value)}")
        return value


NonEmptyStr = Annotated[StrictStr, Field(json_schema_extra={"minLength": 1})]
TokenIds = Annotated[list[TokenId], Field(json_schema_extra={"minItems": 1})]
PromptInput = (NonEmptyStr | Annotated[list[NonEmptyStr], Field(json_schema_extra={"minItems": 1})] | TokenIds
               | Annotated[list[TokenIds], Field(json_schema_extra={"minItems": 1})])


class CompletionRequest(SamplingFields):
    prompt: PromptInput
    logprobs: StrictInt | None = documented(minimum=0, maximum=MAX_TOP_LOGPROBS)
    echo: StrictBool | None = False
    suffix: StrictStr | None = None


class TokenizeRequest(_Request):
    """vLLM's /tokenize: either `prompt`, or `messages` rendered through the chat template."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["prompt"]}, {"required": ["messages"]}]})

    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = documented(minItems=1, maxItems=MAX_MESSAGES)
    add_generation_prompt: StrictBool = True
    add_special_tokens: StrictBool = True

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.messages is not None and not self.messages:
            raise ValueError("at least one message is required")
        if self.messages is not None and len(self.messages) > MAX_MESSAGES:
            raise ValueError(f"at most {MAX_MESSAGES} messages per request, got {len(self.messages)}")
        return self


class DetokenizeRequest(_Request):
    model: StrictStr | None = None
    tokens: list[TokenId]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _find_lone_surrogate(value: Any, path: str = "body") -> str | None:
    """The path of the first string holding a lone UTF-16 surrogate (JSON allows '\\ud800'; UTF-8 does not)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _find_lone_surrogate(key, path) if isinstance(key, str) else None
        found = found or _find_lone_surrogate(item, f"{path}.{key}" if path != "body" else str(key))
        if found:
            return found
    return None


Model = TypeVar("Model", bound=BaseModel)


def parse_json(raw: bytes) -> dict[str, Any]:
    """Bytes -> a JSON object, or a 400 that says what is wrong with them."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad_request(f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request(f"The body must be a JSON object, got {type(body).__name__}.")
    where = _find_lone_surrogate(body)
    if where:
        raise bad_request(f"{where}: contains a lone surrogate (invalid Unicode)", param=where.split(".")[0])
    return body


def parse_model(body: dict[str, Any], model: type[Model]) -> Model:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise APIError(400, message, param=param) from None


async def parse_request(request: Request, model: type[Model]) -> Model:
    """Read, decode and validate a request body; every failure is a 400 in OpenAI's shape."""
    return parse_model(parse_json(await request.body()), model)
