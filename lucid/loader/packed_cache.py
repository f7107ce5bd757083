"""The packed-weights cache: a model as the serving engine holds it (quantized matrices packed for lucid's kernels,
float embedding and norms), saved after the first quantized load and read back on the next.

Why: quantizing means reading every float weight once. From the float cache that maps ~1 GB of bfloat16 pages into
the process (they count in its peak memory) and costs seconds; the packed entry is ~0.7 GB and needs no work.
Keyed by the source (path, size and mtime of its files), the dtype, the scheme and the packing format.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import torch

from lucid.loader.cache import cache_dir, remove_stale_entries, write_entry
from lucid.loader.dtypes import dtype_name

log = logging.getLogger(__name__)

# Bump when lucid.kernels changes how it packs weights (old entries are then ignored). 2: a tied head is q8 and
# the embedding reads its rows from it. 3: an untied embedding is q8 too (model.embed_tokens.qweight / .scales).
# 4: a GGUF's 4-bit matrices keep their own levels (lucid.loader.gguf_q4), and `auto` follows the file's bits.
PACKED_FORMAT = 4
WEIGHTS_FILE = "model.safetensors"
MIN_SOURCE_BYTES = 64 << 20  # smaller models (the tests' tiny ones) load fast anyway: not worth a cache entry


def _source_files(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix in (".safetensors", ".json", ".gguf"))
    return [source]


def _source_prefix(source: Path) -> str:
    return f"{source.name}-{hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:10]}-"


def packed_entry(source: Path, dtype: torch.dtype, scheme: str) -> Path | None:
    """Where the packed weights of this version of `source` in this dtype and scheme live (or will); None for a
    source too small to be worth caching."""
    files = _source_files(source)
    if sum(f.stat().st_size for f in files) < MIN_SOURCE_BYTES:
        return None
    version = hashlib.sha1()
    for f in files:
        st = f.stat()
        version.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    key = f"{_source_prefix(source)}{version.hexdigest()[:10]}-{dtype_name(dtype)}-{scheme}-p{PACKED_FORMAT}"
    return cache_dir() / "packed" / key


def load_packed(entry: Path) -> dict[str, torch.Tensor] | None:
    """The entry's tensors, or None when it is missing or damaged (a damaged entry is removed)."""
    path = entry / WEIGHTS_FILE
    if not path.is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lucid.loader.huge_pages import huge_pages_available, map_safetensors

    try:
        if huge_pages_available():
            try:
                return map_safetensors(path)  # in 2 MiB pages: decode streams these weights every token
            except (OSError, ValueError) as exc:  # ValueError: a header _tensor_layout does not take
                log.debug("mapping %s in huge pages failed (%s); mapping it with safetensors", path, exc)
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        log.warning("ignoring damaged packed-weights cache %s (%s)", entry, exc)
        shutil.rmtree(entry, ignore_errors=True)
        return None


def save_packed(entry: Path, source: Path, state: dict[str, torch.Tensor]) -> None:
    """Write the entry (see `write_entry`); entries of earlier versions of the source are then removed (those of
    other dtypes and schemes for this version stay)."""
    from safetensors.torch import save_file

    def write(folder: Path) -> None:
        save_file({name: t.contiguous() for name, t in state.items()}, str(folder / WEIGHTS_FILE))

    if write_entry(entry, write, "packed-weights"):
        from lucid.loader.huge_pages import drop_cached_pages

        drop_cached_pages(entry / WEIGHTS_FILE)  # read back through readahead in large folios: huge pages
        prefix = _source_prefix(source)
        version = entry.name[len(prefix):].split("-", 1)[0]
        remove_stale_entries(entry.parent, prefix, keep=lambda name: name[len(prefix):].startswith(version + "-")
                             and name.endswith(f"-p{PACKED_FORMAT}"))
