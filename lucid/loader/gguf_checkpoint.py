"""A GGUF file as a Checkpoint: through the prepared-weights cache when it pays off."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lucid.errors import ModelLoadError
from lucid.loader.cache import CACHE_MIN_BYTES, load_prepared, prepared_entry, save_prepared
from lucid.loader.checkpoint import Checkpoint, GGUFContents
from lucid.loader.gguf_file import read_gguf

if TYPE_CHECKING:
    from lucid.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def read_gguf_checkpoint(path: Path, dtype: torch.dtype, use_cache: bool | None = None,
                         prepare_tokenizer: bool = True) -> Checkpoint:
    """Read a GGUF file; `use_cache` None caches files of CACHE_MIN_BYTES and more. `prepare_tokenizer` False
    leaves a byte-level tokenizer's BPE unbuilt until something encodes (Tokenizer.prepare)."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file.")
    if use_cache is None:
        use_cache = path.stat().st_size >= CACHE_MIN_BYTES
    entry = None
    if use_cache:
        try:
            entry = prepared_entry(path, dtype)
        except ModelLoadError as exc:  # an unusable cache folder only costs speed
            log.warning("not caching prepared weights: %s", exc)
    contents = load_prepared(entry, dtype) if entry else None
    if contents is None:
        contents = read_gguf(path, dtype)
        if entry:
            save_prepared(entry, path, contents)
    tokenizer = tokenizer_from_fields(contents, str(path))
    if prepare_tokenizer:
        tokenizer.prepare()  # unusable vocabulary or merges fail the load, naming the file
    return Checkpoint(path=path, name=contents.name, config=contents.config,
                      generation_config=contents.generation_config, tokenizer=tokenizer, tensors=contents.tensors,
                      stored_formats=contents.stored_formats)


def tokenizer_from_fields(contents: GGUFContents, source: str) -> Tokenizer:
    """Build the tokenizer from the GGUF's tokenizer.* values, naming the file when they are unusable. A byte-level
    one is built lazily (its BPE on first use or `prepare()`): the engine process only reads token strings."""
    from lucid.tokenizer import Tokenizer

    try:
        return Tokenizer.from_gguf_fields(contents.tokenizer_fields, source=source, lazy=True)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 (the tokenizers library raises bare Exception on bad vocab/merges)
        raise ModelLoadError(f"{source}: the tokenizer in the metadata cannot be built: {exc}") from None
