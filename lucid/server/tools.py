"""Tools on /v1/chat/completions: `tools` / `tool_choice` / `parallel_tool_calls` (and the legacy `functions` /
`function_call`) turned into what the template, the engine and the response need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lucid.server.errors import bad_request
from lucid.server.protocol import ChatCompletionRequest
from lucid.structured.spec import GrammarSpec
from lucid.structured.tool_grammar import no_call_grammar, tool_call_grammar

MAX_TOOLS = 128


@dataclass
class ChatTools:
    tools: list[dict[str, Any]]          # OpenAI tool objects, {"type": "function", "function": {...}}
    mode: str                            # "none" | "auto" | "required" | "named"
    named: str | None = None             # the function a named tool_choice forces
    parallel: bool = True

    @property
    def active(self) -> bool:
        """Whether the model sees the tools and its output is parsed for calls."""
        return bool(self.tools) and self.mode != "none"

    @property
    def names(self) -> set[str]:
        return {t["function"]["name"] for t in self.tools}

    def template_tools(self) -> list[dict[str, Any]] | None:
        return self.tools if self.active else None

    def no_call_grammar(self, tag_tokens: bool) -> GrammarSpec | None:
        """tool_choice "none" with tools: the constraint that keeps the model from calling (OpenAI: the model
        will not call a tool), used when the request has no other output constraint (a JSON schema or regex
        already rules the call forms out). "auto" is left free."""
        return no_call_grammar(tag_tokens) if self.tools and self.mode == "none" else None

    def grammar(self, tag_tokens: bool) -> GrammarSpec | None:
        """The constraint that forces a call ("required" or a named function), else None. `tag_tokens`: whether
        the model's vocabulary has the call tags as tokens (lucid.structured.tool_grammar.tags_are_tokens)."""
        if not self.active or self.mode == "auto":
            return None
        functions = [t["function"] for t in self.tools]
        if self.mode == "named":
            functions = [f for f in functions if f["name"] == self.named]
        return tool_call_grammar(functions, self.parallel and self.mode == "required", tag_tokens,
                                 param="tool_choice")


def chat_tools(req: ChatCompletionRequest) -> ChatTools:
    """Validate and normalize the request's tool fields; every problem is a 400 naming the field."""
    if req.tools is not None and req.functions is not None:
        raise bad_request("give either 'tools' or the legacy 'functions', not both", param="functions")
    legacy = req.functions is not None
    raw = req.functions if legacy else req.tools
    param = "functions" if legacy else "tools"
    if len(raw or []) > MAX_TOOLS:
        raise bad_request(f"{param}: at most {MAX_TOOLS} functions, got {len(raw or [])}", param=param)
    tools = [normalize_tool(t, f"{param}[{i}]", legacy) for i, t in enumerate(raw or [])]
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise bad_request(f"{param}: function names must be unique", param=param)
    choice = req.function_call if legacy else req.tool_choice
    choice_param = "function_call" if legacy else "tool_choice"
    if choice is None:
        mode, named = ("auto" if tools else "none"), None
    elif choice in ("none", "auto", "required"):
        mode, named = choice, None
    elif isinstance(choice, dict):
        function = choice.get("function") if not legacy else choice
        name = function.get("name") if isinstance(function, dict) else None
        if (not legacy and choice.get("type") != "function") or not isinstance(name, str):
            raise bad_request(f"{choice_param} must be 'none', 'auto', 'required' or "
                              '{"type": "function", "function": {"name": ...}}', param=choice_param)
        if name not in names:
            raise bad_request(f"{choice_param} names function {name!r}, which is not among the {param}",
                              param=choice_param)
        mode, named = "named", name
    else:
        raise bad_request(f"{choice_param} must be 'none', 'auto', 'required' or a function object",
                          param=choice_param)
    if mode in ("required", "named") and not tools:
        raise bad_request(f"{choice_param} {mode!r} needs at least one tool", param=choice_param)
    parallel = req.parallel_tool_calls is not False
    return ChatTools(tools, mode, named, parallel)


def normalize_tool(raw: Any, where: str, legacy: bool = False) -> dict[str, Any]:
    """One tool as {"type": "function", "function": {name, description, parameters}}; `legacy`: a bare function
    object (OpenAI's old `functions`). A malformed one is a 400 naming `where`."""
    function = raw if legacy else (raw.get("function") if isinstance(raw, dict) else None)
    if not legacy and (not isinstance(raw, dict) or raw.get("type", "function") != "function"):
        raise bad_request(f"{where}: only tools of type 'function' are supported", param=where.split("[")[0])
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise bad_request(f"{where}: a function needs a 'name'", param=where.split("[")[0])
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise bad_request(f"{where}: 'parameters' must be a JSON schema object", param=where.split("[")[0])
    clean = {"name": function["name"], "description": function.get("description", ""),
             "parameters": parameters if parameters is not None else {"type": "object", "properties": {}}}
    return {"type": "function", "function": clean}
