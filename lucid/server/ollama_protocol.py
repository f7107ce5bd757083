"""Ollama's request bodies (/api/generate, /api/chat) and its `options`, mapped onto lucid's SamplingParams.

Streaming is the default, as in Ollama. Sampling defaults are Ollama's (temperature 0.8, top_k 40, top_p 0.9);
`repeat_penalty` applies only when given, because lucid's penalty counts every earlier token, not Ollama's last 64.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, StrictBool, StrictStr

from lucid.errors import SamplingParamsError
from lucid.sampling_params import SamplingParams
from lucid.server.errors import APIError
from lucid.server.protocol import TokenId, _Request

DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9}
# Ollama's option name -> (SamplingParams field, kind). Load-time and runner options (num_ctx, num_thread, mmap ...)
# are accepted and ignored, as Ollama ignores options that do not apply.
_OPTIONS = {"temperature": ("temperature", float), "top_p": ("top_p", float), "top_k": ("top_k", int),
            "min_p": ("min_p", float), "seed": ("seed", int), "repeat_penalty": ("repetition_penalty", float),
            "presence_penalty": ("presence_penalty", float), "frequency_penalty": ("frequency_penalty", float)}
_REFUSED_OPTIONS = {"mirostat": 0, "tfs_z": 1.0, "typical_p": 1.0}  # honoured only at these (neutral) values


def bad(message: str) -> APIError:
    return APIError(400, message)


class OllamaMessage(_Request):
    role: StrictStr
    content: StrictStr = ""
    images: list[Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: StrictStr | None = None
    thinking: StrictStr | None = None

    def for_template(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.tool_name:
            message["name"] = self.tool_name
        return message


class _OllamaRequest(_Request):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, protected_namespaces=())

    model: StrictStr = ""
    stream: StrictBool = True
    options: dict[str, Any] | None = None
    format: Any = None           # "json" or a JSON schema (lucid.server.ollama_tools)
    keep_alive: Any = None       # lucid keeps its one model loaded
    think: Any = None

    def refuse_unsupported(self) -> None:
        if self.think not in (None, False):
            raise bad(f'"{self.model}" does not support thinking')

    def sampling_params(self, max_tokens: int, vocab_size: int, stop_token_ids: list[int]) -> SamplingParams:
        options = dict(self.options or {})
        fields: dict[str, Any] = {key: value for key, value in DEFAULTS.items()}
        for name, (field, kind) in _OPTIONS.items():
            if options.get(name) is not None:
                fields[field] = _number(name, options[name], kind)
        for name, neutral in _REFUSED_OPTIONS.items():
            if options.get(name) not in (None, neutral):
                raise bad(f'option "{name}" is not supported by lucid (only {neutral})')
        if fields.get("seed") is not None and fields["seed"] < 0:
            fields["seed"] = None  # Ollama: -1 = random
        stop = options.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise bad('option "stop" must be a list of strings')
        try:
            params = SamplingParams(max_tokens=max_tokens, stop=[s for s in stop if s],
                                    stop_token_ids=stop_token_ids, **fields)
            params.validate(vocab_size=vocab_size)
        except SamplingParamsError as exc:
            raise bad(f"invalid option: {exc}") from None
        return params

    def num_predict(self) -> int | None:
        """The token budget Ollama's num_predict asks for; None: the rest of the context (-1 and -2)."""
        value = (self.options or {}).get("num_predict")
        if value is None:
            return None
        value = _number("num_predict", value, int)
        if value in (-1, -2):
            return None
        if value < 1:
            raise bad('option "num_predict" must be -1 (no limit), -2 (fill the context) or a positive number')
        return value


def _number(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
        raise bad(f'option "{name}" must be {"an integer" if kind is int else "a number"}, got {value!r}')
    return kind(value)


class GenerateRequest(_OllamaRequest):
    prompt: StrictStr = ""
    suffix: StrictStr = ""
    system: StrictStr = ""
    template: StrictStr = ""
    context: list[TokenId] | None = None
    raw: StrictBool = False
    images: list[Any] | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.raw and (self.template or self.system or self.context):
            raise bad("raw mode does not support template, system, or context")
        if self.template:
            raise bad("'template' (a Go template) is not supported: lucid renders the model's own chat template")
        if self.images:
            raise bad(f'"{self.model}" does not support images')


class ChatRequest(_OllamaRequest):
    messages: list[OllamaMessage] = []
    tools: list[Any] | None = None   # OpenAI-style function tools (lucid.server.ollama_tools)

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if any(m.images for m in self.messages):
            raise bad(f'"{self.model}" does not support images')
