"""Everything that turns a path on disk into weights, config and tokenizer.

The names below are imported on first use (PEP 562), not with the package: `import lucid.loader.<module>` then costs
only that module, so the torch-free ones (default_model, catalog, cache, early_tokenizer) stay torch-free for the
API front process.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lucid.loader.cache import cache_dir
    from lucid.loader.catalog import pull, pulled_models
    from lucid.loader.checkpoint import Checkpoint
    from lucid.loader.convert import convert_gguf_to_hf
    from lucid.loader.default_model import DEFAULT_MODEL_NAME, default_model_path, pull_default_model
    from lucid.loader.load import LoadedModel, load, load_quantized
    from lucid.loader.read import read_checkpoint
    from lucid.loader.tensors import parse_dtype

# name -> the module that defines it
_EXPORTS = {
    "cache_dir": "cache", "pull": "catalog", "pulled_models": "catalog", "Checkpoint": "checkpoint",
    "convert_gguf_to_hf": "convert", "DEFAULT_MODEL_NAME": "default_model", "default_model_path": "default_model",
    "pull_default_model": "default_model", "LoadedModel": "load", "load": "load", "load_quantized": "load",
    "read_checkpoint": "read", "parse_dtype": "tensors",
}

__all__ = [
    "DEFAULT_MODEL_NAME", "Checkpoint", "LoadedModel", "cache_dir", "convert_gguf_to_hf", "default_model_path",
    "load", "load_quantized", "parse_dtype", "pull", "pull_default_model", "pulled_models", "read_checkpoint",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _LoaderPackage(types.ModuleType):
    """Importing the submodule lucid.loader.load records it on the package as `load`, the name of the function
    the package exports: keep the function there (what `from lucid.loader import load` must give)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _LoaderPackage
