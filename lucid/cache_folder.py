"""lucid's cache folder and what its caches (prepared weights, packed weights, built tokenizers) share: where the
folder is, how an entry is named after its source file, how one is written atomically and how stale ones go."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from lucid.errors import ModelLoadError

CACHE_ENV = "LUCID_CACHE_DIR"


def cache_dir() -> Path:
    """~/.cache/lucid, or $LUCID_CACHE_DIR; created when missing."""
    folder = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lucid").expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"{folder}: cannot create lucid's cache folder ({exc.strerror or exc}); "
                             f"set {CACHE_ENV} to a writable folder.") from None
    return folder


def entry_prefix(gguf_path: Path) -> str:
    # The resolved path's hash keeps two different "model.gguf" files apart.
    path_hash = hashlib.sha1(str(gguf_path.resolve()).encode()).hexdigest()[:10]
    return f"{gguf_path.stem}-{path_hash}-"


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
        logging.getLogger(__name__).warning("could not write the %s cache %s: %s", what, entry, exc)
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
