"""The server's settings from the command line: plain data, importable without FastAPI (so `lucid serve` can parse
its arguments before the heavy imports start)."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MAX_BODY_BYTES = 8 << 20  # 8 MiB: a full 32k-token prompt as token ids is well under 1 MiB


@dataclass
class ServerSettings:
    served_model_names: list[str] = field(default_factory=list)  # empty: the engine's own short name
    api_key: str | None = None
    allowed_origins: list[str] = field(default_factory=list)      # empty: CORS off
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    host: str = "127.0.0.1"
    port: int = 8000
    # FIM requests reuse K/V runs of at least this many tokens at shifted positions (llama.cpp's --cache-reuse,
    # which llama.vscode asks for; engine/kv_reuse.py). 0: off, exact prefix caching only.
    cache_reuse: int = 256
