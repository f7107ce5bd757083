"""What a model argument names: a GGUF file or a Hugging Face folder, found from a path, a pulled model's name, or
"default". Torch-free: the API front finds the model's tokenizer with it before the engine process has loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lucid.errors import ModelLoadError
from lucid.loader.catalog import pullable_names, pulled_path
from lucid.loader.checkpoint import is_gguf_file
from lucid.loader.default_model import DEFAULT_MODEL_NAME, default_model_path


@dataclass(frozen=True)
class ModelLocation:
    kind: Literal["gguf", "hf"]
    path: Path                  # the .gguf file, or the HF folder
    name: str | None = None     # the name the model goes by when it was asked for by name (else its own)


def names_default_model(path: str | Path | None) -> bool:
    """None, "default" and the default model's name all mean the default model."""
    return path is None or str(path) in ("default", DEFAULT_MODEL_NAME)


def locate_model(path: str | Path | None) -> ModelLocation:
    """Where the model is; the default model is assembled first if need be. ModelLoadError when nothing usable is
    there, saying what would be."""
    if names_default_model(path):
        return ModelLocation("gguf", default_model_path(), DEFAULT_MODEL_NAME)

    named = pulled_path(str(path)) if not Path(str(path)).expanduser().exists() else None
    if named is not None:
        return ModelLocation("gguf", named, str(path))

    path = Path(str(path)).expanduser()
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or folder. Give a Hugging Face model folder, a .gguf file, "
                             f"a pulled model's name ({', '.join(pullable_names())}), or 'default'.")
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelLocation("hf", path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            found = "no .gguf file" if not ggufs else f"{len(ggufs)} .gguf files"
            raise ModelLoadError(f"{path}: not a model folder: it has no config.json and {found}.")
        path = ggufs[0]
    elif path.name == "config.json" or path.suffix == ".safetensors":
        return ModelLocation("hf", path.parent)

    if path.suffix.lower() == ".gguf" or is_gguf_file(path):
        return ModelLocation("gguf", path)
    raise ModelLoadError(f"{path}: not a model: expected a .gguf file or a Hugging Face folder with config.json.")
