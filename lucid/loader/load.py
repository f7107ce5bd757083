"""load(): a path on disk -> a ready model on a device, with its tokenizer and configs."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.loader.checkpoint import Checkpoint
from lucid.loader.read import read_checkpoint
from lucid.loader.tensors import parse_dtype

if TYPE_CHECKING:
    from lucid.models.base import CausalLM
    from lucid.quantize import WeightSource
    from lucid.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """What `load` returns: the model with everything needed to serve it."""

    model: CausalLM
    tokenizer: Tokenizer
    config: ModelConfig
    generation_config: dict[str, Any]
    name: str
    path: Path
    stored_formats: dict[str, str]


def _loaded(checkpoint: Checkpoint, model: CausalLM) -> LoadedModel:
    return LoadedModel(model=model, tokenizer=checkpoint.tokenizer, config=checkpoint.config,
                       generation_config=checkpoint.generation_config, name=checkpoint.name,
                       path=checkpoint.path, stored_formats=checkpoint.stored_formats)


def load(path: str | Path | None = None, dtype: str | torch.dtype = "bfloat16", device: str = "cpu") -> LoadedModel:
    """Read a checkpoint (HF folder, .gguf, or None/"default" for the default model) and build the model."""
    from lucid.models.base import build_model

    torch_dtype = parse_dtype(dtype)
    checkpoint = read_checkpoint(path, torch_dtype)
    model = build_model(checkpoint.config, checkpoint.tensors, torch_dtype, device, source=str(checkpoint.path))
    return _loaded(checkpoint, model)


def _weight_source(checkpoint: Checkpoint, scheme: str) -> WeightSource:
    """The checkpoint's stored formats and, for a GGUF on lucid's kernels, the levels of its 4-bit matrices."""
    from lucid.loader.checkpoint import is_gguf_file
    from lucid.quantize import WeightSource, can_pack

    codes = {}
    gguf = checkpoint.path.is_file() and is_gguf_file(checkpoint.path)
    if scheme in ("auto", "mixed", "int4") and gguf and can_pack():
        from lucid.loader.gguf_q4 import read_q4_codes

        codes = read_q4_codes(checkpoint.path, checkpoint.config, checkpoint.tensors)
    return WeightSource(checkpoint.stored_formats, codes)


def load_quantized(path: str | Path | None, scheme: str, dtype: str | torch.dtype = "bfloat16",
                   device: str = "cpu", prepare_tokenizer: bool = True) -> LoadedModel:
    """The serving model: fused projections and weights quantized per `scheme` ("none" keeps the float model).

    With lucid's kernels the packed weights are cached after the first load; later loads read them back directly,
    so the float weights are never read again (start-up in a few seconds, peak memory near the packed size).
    `prepare_tokenizer` False: see read_checkpoint."""
    from lucid.loader.packed_cache import load_packed, packed_entry, save_packed
    from lucid.models.base import build_model
    from lucid.quantize import can_pack, fuse_and_quantize, packed_model, packed_state

    torch_dtype = parse_dtype(dtype)
    checkpoint = read_checkpoint(path, torch_dtype, prepare_tokenizer=prepare_tokenizer)
    entry = None
    if scheme != "none" and str(device).startswith("cpu") and can_pack():
        try:
            entry = packed_entry(checkpoint.path, torch_dtype, scheme)
        except (OSError, ModelLoadError) as exc:  # an unusable cache folder only costs speed
            log.warning("not caching packed weights: %s", exc)
    tensors = load_packed(entry) if entry else None
    model = None
    if tensors is not None:
        try:
            model = packed_model(checkpoint.config, tensors, scheme, torch_dtype, source=str(entry),
                                 stored_formats=checkpoint.stored_formats)
        except ModelLoadError as exc:  # an entry that does not fit (a bug, a hand-edited file): rebuild it
            log.warning("ignoring unusable packed-weights cache: %s", exc)
            shutil.rmtree(entry, ignore_errors=True)
    if model is None:
        model = build_model(checkpoint.config, checkpoint.tensors, torch_dtype, device, source=str(checkpoint.path))
        fuse_and_quantize(model, scheme, _weight_source(checkpoint, scheme))
        if entry:
            save_packed(entry, checkpoint.path, packed_state(model))
    return _loaded(checkpoint, model)
