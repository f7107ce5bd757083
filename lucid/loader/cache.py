"""lucid's cache folder, and the prepared-weights cache: dequantized GGUF tensors kept as safetensors.

Dequantizing a 0.5B GGUF in numpy takes seconds (and parsing its 150k-token header as long again), so after the
first load the float tensors and the header values lucid uses are saved under the cache folder, keyed by the
GGUF's path, size, mtime and the dtype; the next load memory-maps them instead.

Torch is imported only where tensors are read or written: the API front reads an entry's tokenizer fields without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.loader.checkpoint import GGUFContents
from lucid.loader.dtypes import dtype_name

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CACHE_ENV = "LUCID_CACHE_DIR"
PREPARED_FORMAT = 2  # bump when the layout or meaning of a prepared entry changes; old entries are then ignored
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
# Below this size dequantizing is faster than writing and re-reading a cache entry (and tests make many
# small files that should not pile up in the cache folder).
CACHE_MIN_BYTES = 64 << 20


def cache_dir() -> Path:
    """~/.cache/lucid, or $LUCID_CACHE_DIR; created when missing."""
    folder = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lucid").expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"{folder}: cannot create lucid's cache folder ({exc.strerror or exc}); "
                             f"set {CACHE_ENV} to a writable folder.") from None
    return folder


def _entry_prefix(gguf_path: Path) -> str:
    # The resolved path's hash keeps two different "model.gguf" files apart.
    path_hash = hashlib.sha1(str(gguf_path.resolve()).encode()).hexdigest()[:10]
    return f"{gguf_path.stem}-{path_hash}-"


def prepared_entry(gguf_path: Path, dtype: str | torch.dtype) -> Path:
    """The folder that holds (or will hold) the prepared weights of this exact file version in this dtype
    (a torch.dtype or its name)."""
    st = gguf_path.stat()
    key = f"{_entry_prefix(gguf_path)}{st.st_size}-{st.st_mtime_ns}-{dtype_name(dtype)}-v{PREPARED_FORMAT}"
    return cache_dir() / "prepared" / key


def load_prepared(entry: Path, dtype: torch.dtype) -> GGUFContents | None:
    """The cached contents of a GGUF file (tensors memory-mapped), or None when `entry` is not usable."""
    from lucid.loader.tensors import LazyTensors, open_safetensors

    if not (entry / META_FILE).is_file():
        return None
    try:
        meta = json.loads((entry / META_FILE).read_text(encoding="utf-8"))
        handle = open_safetensors(str(entry / WEIGHTS_FILE))
        readers = {name: (lambda n=name: handle.get_tensor(n)) for name in handle.keys()}  # noqa: SIM118 (not a dict)
        config = ModelConfig.from_dict(meta["config"], source=str(entry / META_FILE))
        return GGUFContents(name=meta["name"], config=config, generation_config=meta["generation_config"],
                            tokenizer_fields=meta["tokenizer_fields"], stored_formats=meta["stored_formats"],
                            tensors=LazyTensors(readers, dtype))  # type: ignore[arg-type]
    except (ModelLoadError, OSError, KeyError, ValueError) as exc:
        # A damaged entry is only a cache miss: drop it and read the GGUF again.
        log.warning("ignoring damaged prepared-weights cache %s (%s)", entry, exc)
        shutil.rmtree(entry, ignore_errors=True)
        return None


def save_prepared(entry: Path, gguf_path: Path, contents: GGUFContents) -> None:
    """Write the entry (see `write_entry`); older versions of the file are then removed."""
    from safetensors.torch import save_file

    meta = {"format": PREPARED_FORMAT, "source": str(gguf_path.resolve()), "name": contents.name,
            "config": contents.config.to_hf_dict(), "generation_config": contents.generation_config,
            "stored_formats": contents.stored_formats, "tokenizer_fields": contents.tokenizer_fields}

    def write(folder: Path) -> None:
        save_file({n: t.contiguous() for n, t in contents.tensors.items()}, str(folder / WEIGHTS_FILE))
        (folder / META_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    if write_entry(entry, write, "prepared-weights"):
        version = entry.name.rsplit("-", 2)[0]  # everything before "-<dtype>-v<format>"
        remove_stale_entries(entry.parent, _entry_prefix(gguf_path),
                             keep=lambda name: name.startswith(version) and name.endswith(f"-v{PREPARED_FORMAT}"))


def write_entry(entry: Path, write: Callable[[Path], None], what: str) -> bool:
    """Run `write(folder)` on a temporary folder, then rename it to `entry` (if another process wrote the same
    entry first, theirs stays). Failing to write (disk full, read-only cache) only costs the next load its speed:
    it is logged and False returned, never raised."""
    from safetensors import SafetensorError

    tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        write(tmp)
        try:
            tmp.rename(entry)
        except OSError:  # another process wrote the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, SafetensorError) as exc:
        log.warning("could not write the %s cache %s: %s", what, entry, exc)
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_entries(folder: Path, prefix: str, keep: Callable[[str], bool]) -> None:
    """Drop the entries named `prefix*` in `folder` that `keep(name)` rejects (earlier versions of a source, older
    formats), and temporary folders left by killed processes."""
    for entry in folder.glob(prefix + "*"):
        name, _, pid = entry.name.partition(".tmp-")
        stale = (pid.isdigit() and not pid_alive(int(pid))) if pid else not keep(name)
        if stale and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
