"""The model's tokenizer for the API front process, without torch and without reading the model.

`lucid serve` starts the API front and the engine process side by side. The front tokenizes requests, so it needs
the same tokenizer `read_checkpoint` gives the engine; when it can build it cheaply (an HF folder's tokenizer files,
or a GGUF whose prepared-cache entry holds the tokenizer fields) it does so here, in parallel with the engine's
load. Otherwise it answers None and the front takes the tokenizer from the engine process: slower, never wrong.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lucid.loader.cache import CACHE_MIN_BYTES, META_FILE, prepared_entry
from lucid.loader.default_model import assembled_default_model
from lucid.loader.locate import locate_model, names_default_model
from lucid.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def early_tokenizer(model: str | Path | None, dtype: str = "bfloat16") -> Tokenizer | None:
    """The tokenizer `read_checkpoint(model, dtype)` would give, built and prepared, or None when it cannot be had
    without reading the model (no prepared-cache entry yet, a small GGUF that is never cached, a default model not
    assembled yet) or anything goes wrong: the engine process reports real load errors. Never raises."""
    try:
        return _tokenizer(model, dtype)
    except Exception:  # noqa: BLE001 (whatever it is, the engine's own load reports it properly)
        log.debug("no early tokenizer for %r; the engine process will provide it", model, exc_info=True)
        return None


def _tokenizer(model: str | Path | None, dtype: str) -> Tokenizer | None:
    if names_default_model(model):
        gguf = assembled_default_model()  # assembling it is the engine process's job (seconds, and once)
        return None if gguf is None else _from_prepared_entry(gguf, dtype)
    found = locate_model(model)
    if found.kind == "hf":
        return Tokenizer.from_hf_folder(found.path)
    return _from_prepared_entry(found.path, dtype)


def _from_prepared_entry(gguf: Path, dtype: str) -> Tokenizer | None:
    """From the tokenizer fields the prepared-weights cache keeps (lucid.loader.cache), read as read_checkpoint
    reads them; None when the file has no entry (yet)."""
    if gguf.stat().st_size < CACHE_MIN_BYTES:  # read_checkpoint reads such a file whole, never through the cache
        return None
    meta_file = prepared_entry(gguf, dtype) / META_FILE
    if not meta_file.is_file():
        return None
    fields = json.loads(meta_file.read_text(encoding="utf-8"))["tokenizer_fields"]
    return Tokenizer.from_gguf_fields(fields, source=str(gguf))  # built now: the front encodes from the start
