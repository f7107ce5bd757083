"""Everything that turns a path on disk into weights, config and tokenizer."""

from lucid.loader.cache import cache_dir
from lucid.loader.catalog import pull, pulled_models
from lucid.loader.checkpoint import Checkpoint
from lucid.loader.convert import convert_gguf_to_hf
from lucid.loader.default_model import DEFAULT_MODEL_NAME, default_model_path, pull_default_model
from lucid.loader.load import LoadedModel, load, load_quantized
from lucid.loader.read import read_checkpoint
from lucid.loader.tensors import parse_dtype

__all__ = [
    "DEFAULT_MODEL_NAME", "Checkpoint", "LoadedModel", "cache_dir", "convert_gguf_to_hf", "default_model_path",
    "load", "load_quantized", "parse_dtype", "pull", "pull_default_model", "pulled_models", "read_checkpoint",
]
