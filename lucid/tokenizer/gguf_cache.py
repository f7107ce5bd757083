"""A GGUF file's tokenizer, kept built: in lucid's cache folder as Hugging Face tokenizer files, and once per process.

Building the tokenizer from a GGUF's 151,936 vocabulary strings and 151,387 merges costs ~0.3 s of Python and Rust
on every start; `tokenizers` reads its own serialized form (tokenizer.json) faster, and needs nothing of torch. So
the first load writes the built tokenizer next to the other caches (`Tokenizer.save_hf`, keyed like the prepared
weights by the file's path, size and mtime), later loads read it back, and what one load built stays in memory for
the next in the same process (a server and its tests load one model several times).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from lucid.cache_folder import cache_dir, entry_prefix, remove_stale_entries, write_entry
from lucid.errors import ModelLoadError
from lucid.tokenizer.tokenizer import Tokenizer

log = logging.getLogger(__name__)

TOKENIZER_CACHE_FORMAT = 1  # bump when what is written changes; old entries are then rebuilt
_built: dict[Path, Tokenizer] = {}
_lock = threading.Lock()


def tokenizer_entry(gguf_path: Path) -> Path:
    """The folder that holds (or will hold) the built tokenizer of this exact file version."""
    st = gguf_path.stat()
    name = f"{entry_prefix(gguf_path)}{st.st_size}-{st.st_mtime_ns}-v{TOKENIZER_CACHE_FORMAT}"
    return cache_dir() / "tokenizers" / name


def cached_tokenizer(gguf_path: Path) -> Tokenizer | None:
    """The file's tokenizer when this process or the cache folder has it built, else None (never builds)."""
    try:
        entry = tokenizer_entry(gguf_path)
    except (OSError, ModelLoadError):
        return None
    with _lock:
        if entry in _built:
            return _built[entry]
        if not (entry / "tokenizer_config.json").is_file():
            return None
        try:
            tokenizer = Tokenizer.from_hf_folder(entry, source=str(gguf_path))
        except ModelLoadError as exc:  # a damaged entry is only a miss: it is rebuilt and written again
            log.warning("ignoring the damaged tokenizer cache %s (%s)", entry, exc)
            return None
        _built[entry] = tokenizer
        return tokenizer


def gguf_tokenizer(gguf_path: Path, build: Callable[[], Tokenizer]) -> Tokenizer:
    """The file's tokenizer from the caches, or `build()` (from the GGUF's fields), then kept in both caches."""
    tokenizer = cached_tokenizer(gguf_path)
    if tokenizer is not None:
        return tokenizer
    tokenizer = build()
    try:
        entry = tokenizer_entry(gguf_path)
    except (OSError, ModelLoadError) as exc:  # an unusable cache folder only costs the next start its speed
        log.warning("not caching the tokenizer: %s", exc)
        return tokenizer
    # save_hf writes tokenizer_config.json last: a folder with it is complete (write_entry renames it whole anyway).
    if write_entry(entry, tokenizer.save_hf, "tokenizer"):
        remove_stale_entries(entry.parent, entry_prefix(gguf_path), keep=lambda name: name == entry.name)
    with _lock:
        _built[entry] = tokenizer
    return tokenizer
