"""The prepared-weights cache: dequantized GGUF tensors kept as safetensors in lucid's cache folder.

Dequantizing a 0.5B GGUF in numpy takes seconds (and parsing its 150k-token header as long again), so after the
first load the float tensors and the header values lucid uses are saved under the cache folder, keyed by the
GGUF's path, size, mtime and the dtype; the next load memory-maps them instead.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from lucid.cache_folder import cache_dir, entry_prefix, remove_stale_entries, write_entry
from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.loader.checkpoint import GGUFContents
from lucid.loader.tensors import LazyTensors, dtype_name, open_safetensors

log = logging.getLogger(__name__)

PREPARED_FORMAT = 2  # bump when the layout or meaning of a prepared entry changes; old entries are then ignored
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"


def prepared_entry(gguf_path: Path, dtype: torch.dtype) -> Path:
    """The folder that holds (or will hold) the prepared weights of this exact file version in this dtype."""
    st = gguf_path.stat()
    key = f"{entry_prefix(gguf_path)}{st.st_size}-{st.st_mtime_ns}-{dtype_name(dtype)}-v{PREPARED_FORMAT}"
    return cache_dir() / "prepared" / key


def load_prepared(entry: Path, dtype: torch.dtype) -> GGUFContents | None:
    """The cached contents of a GGUF file (tensors memory-mapped), or None when `entry` is not usable."""
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
        remove_stale_entries(entry.parent, entry_prefix(gguf_path),
                             keep=lambda name: name.startswith(version) and name.endswith(f"-v{PREPARED_FORMAT}"))


