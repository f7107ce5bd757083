"""What Ollama's /api/tags, /api/show and /api/ps say about the served model, from its file and its config.

Ollama names models `name:tag`; lucid lists each served name with `:latest` (unless it has a tag) and accepts it
with or without the tag. `model_info` is the GGUF header's scalar keys, as Ollama gives it (a HF folder: config).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucid.server.errors import APIError
from lucid.server.fim import FimTokens
from lucid.server.generation import max_model_len
from lucid.server.state import ServerState

if TYPE_CHECKING:
    from lucid.config import ModelConfig
    from lucid.engine.async_engine import AsyncEngine

NEVER = "2318-01-01T00:00:00Z"  # /api/ps expires_at: lucid keeps its model loaded for as long as it runs


def tagged(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def resolve_model(state: ServerState, name: str) -> str:
    """The name to echo; Ollama's 400 for none given and 404 for one this server does not serve."""
    if not name:
        raise APIError(400, "model is required")
    if name in state.served_names or name.removesuffix(":latest") in state.served_names:
        return name
    raise APIError(404, f"model '{name}' not found")


def parameter_count(config: ModelConfig) -> int:
    """Parameters of a Qwen2-family model from its shapes (a separate lm_head unless tied)."""
    h, kv = config.hidden_size, config.num_key_value_heads * config.head_dim
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * config.intermediate_size + 2 * h
    embeddings = config.vocab_size * h * (1 if config.tie_word_embeddings else 2)
    return embeddings + config.num_hidden_layers * layer + h


def human_count(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


@cache
def _gguf_header(path: Path) -> dict[str, Any]:
    """The GGUF header's scalar values (arrays such as the vocabulary left out, as Ollama leaves them out)."""
    from lucid.loader.gguf_header import open_gguf, read_metadata

    meta = read_metadata(open_gguf(path))
    return {k: v for k, v in meta.items() if not isinstance(v, list | tuple) and k != "tokenizer.chat_template"}


async def _header(engine: AsyncEngine) -> dict[str, Any]:
    path = engine.source_path
    if path is None or path.suffix != ".gguf":
        return {}
    return await asyncio.to_thread(_gguf_header, path)


def _file_facts(path: Path | None) -> tuple[int, str, str]:
    """Size in bytes, modification time and a digest standing for the file (of its path, size and mtime)."""
    if path is None or not path.exists():
        return 0, datetime.now(UTC).isoformat(), hashlib.sha256(b"lucid").hexdigest()
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    mtime = max(p.stat().st_mtime for p in files) if files else 0.0
    digest = hashlib.sha256(f"{path.resolve()}:{size}:{mtime}".encode()).hexdigest()
    return size, datetime.fromtimestamp(mtime, UTC).isoformat(), digest


def _quantization(header: dict[str, Any], config: ModelConfig) -> str:
    if "general.file_type" in header:
        from gguf import LlamaFileType

        try:
            return LlamaFileType(header["general.file_type"]).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    return {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}.get(config.torch_dtype, config.torch_dtype.upper())


async def details(engine: AsyncEngine) -> dict[str, Any]:
    header = await _header(engine)
    family = header.get("general.architecture", engine.model_config.model_type)
    return {"parent_model": "", "format": "gguf" if header else "safetensors", "family": family,
            "families": [family], "parameter_size": human_count(parameter_count(engine.model_config)),
            "quantization_level": _quantization(header, engine.model_config)}


async def tags(state: ServerState, engine: AsyncEngine) -> dict[str, Any]:
    size, modified, digest = await asyncio.to_thread(_file_facts, engine.source_path)
    info = await details(engine)
    return {"models": [{"name": tagged(n), "model": tagged(n), "modified_at": modified, "size": size,
                        "digest": digest, "details": info} for n in state.served_names]}


async def running(state: ServerState, engine: AsyncEngine) -> dict[str, Any]:
    size, _, digest = await asyncio.to_thread(_file_facts, engine.source_path)
    info = await details(engine)
    name = tagged(state.served_names[0])  # one model is loaded, whatever the names it answers to
    return {"models": [{"name": name, "model": name, "size": size, "digest": digest, "details": info,
                        "expires_at": NEVER, "size_vram": 0, "context_length": max_model_len(engine)}]}


def template_takes_tools(tokenizer: Any) -> bool:
    """Whether the chat template writes the tools it is given into the prompt (Ollama's "tools" capability):
    rendered with and without one made-up tool, the two prompts differ."""
    messages = [{"role": "user", "content": "hi"}]
    tool = {"type": "function", "function": {"name": "probe", "description": "", "parameters": {"type": "object"}}}
    try:
        return (tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=[tool])
                != tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    except Exception:  # noqa: BLE001 - a template that cannot render tools does not take them
        return False


async def show(engine: AsyncEngine) -> dict[str, Any]:
    header = await _header(engine)
    config = engine.model_config
    _, modified, _ = await asyncio.to_thread(_file_facts, engine.source_path)
    arch = header.get("general.architecture", config.model_type)
    model_info = header or {
        "general.architecture": arch, f"{arch}.context_length": config.max_position_embeddings,
        f"{arch}.embedding_length": config.hidden_size, f"{arch}.block_count": config.num_hidden_layers,
        f"{arch}.feed_forward_length": config.intermediate_size,
        f"{arch}.attention.head_count": config.num_attention_heads,
        f"{arch}.attention.head_count_kv": config.num_key_value_heads}
    model_info = {**model_info, "general.parameter_count": parameter_count(config)}
    capabilities = (["completion"] + (["tools"] if template_takes_tools(engine.tokenizer) else [])
                    + (["insert"] if FimTokens.find(engine.tokenizer) else []))
    return {"license": "", "modelfile": f"# served by lucid\nFROM {engine.source_path or engine.model_name}\n",
            "parameters": "", "template": engine.tokenizer.chat_template or "", "details": await details(engine),
            "model_info": model_info, "capabilities": capabilities, "modified_at": modified}
