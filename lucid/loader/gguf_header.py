"""A GGUF file's header (its key/value metadata) through the `gguf` package, without torch: the API front reads it
for Ollama's /api/show and /api/tags while the weights live in the engine process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucid.errors import ModelLoadError

if TYPE_CHECKING:
    from gguf import GGUFReader


def open_gguf(path: Path) -> GGUFReader:
    """Parse the header; a truncated or corrupt file becomes a ModelLoadError naming it."""
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such file.") from None
    except (ValueError, IndexError, KeyError, TypeError, OverflowError, OSError) as exc:
        # what the reader raises on a malformed or missing byte, depending on where it stops
        raise ModelLoadError(
            f"{path}: not a readable GGUF file (truncated or corrupt?): {type(exc).__name__}: {exc}"
        ) from None


def read_metadata(reader: GGUFReader) -> dict[str, Any]:
    """Every key/value of the header as plain Python values (strings, numbers, lists)."""
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
