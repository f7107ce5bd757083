"""Read a GGUF file through the `gguf` package: metadata -> config, tokenizer fields, dequantized tensors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.loader.checkpoint import GGUFContents, model_slug
from lucid.loader.gguf_header import open_gguf, read_metadata
from lucid.loader.names import gguf_to_hf
from lucid.loader.validate import check_tensor_shapes
from lucid.models.registry import ModelFamily, family_for_gguf

if TYPE_CHECKING:
    from gguf import ReaderTensor

__all__ = ["GGUFContents", "open_gguf", "read_gguf", "read_metadata"]

TOKENIZER_KEYS = (
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
    "tokenizer.ggml.scores", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.add_eos_token", "general.architecture",
)
# metadata suffix (after "<arch>.") -> ModelConfig field, for every family
_CONFIG_KEYS = {
    "block_count": "num_hidden_layers",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "context_length": "max_position_embeddings",
    "attention.key_length": "head_dim",
}
_OPTIONAL_CONFIG_KEYS = ("attention.head_count_kv", "rope.freq_base", "attention.layer_norm_rms_epsilon",
                         "context_length", "attention.key_length")


def _config_from_metadata(meta: dict[str, Any], tensor_shapes: dict[str, tuple[int, ...]], family: ModelFamily,
                          source: str) -> ModelConfig:
    arch = family.gguf_architecture
    missing = [f"{arch}.{k}" for k in _CONFIG_KEYS if k not in _OPTIONAL_CONFIG_KEYS and f"{arch}.{k}" not in meta]
    if missing:
        raise ModelLoadError(f"{source}: metadata keys are missing: {', '.join(missing)}.")
    keys = {**_CONFIG_KEYS, **family.gguf_config_keys}
    raw: dict[str, Any] = {field: meta[f"{arch}.{key}"] for key, field in keys.items() if f"{arch}.{key}" in meta}
    raw.setdefault("head_dim", raw["hidden_size"] // raw["num_attention_heads"])
    for key in ("rope_theta", "rms_norm_eps"):
        if key in raw:  # stored as float32: take its shortest decimal (1e-06, not 9.999999974752427e-07)
            raw[key] = float(str(np.float32(raw[key])))
    tokens = meta.get("tokenizer.ggml.tokens")
    embd = tensor_shapes.get("model.embed_tokens.weight")
    # The token list is padded to the embedding's row count by the converters; fall back to the embedding rows.
    raw["vocab_size"] = len(tokens) if tokens else (embd[0] if embd else 0)
    raw["tie_word_embeddings"] = "lm_head.weight" not in tensor_shapes
    raw["bos_token_id"] = meta.get("tokenizer.ggml.bos_token_id")
    raw["eos_token_id"] = meta.get("tokenizer.ggml.eos_token_id")
    raw["torch_dtype"] = "bfloat16"
    raw["architectures"] = list(family.hf_architectures[:1])
    if family.gguf_config is not None:
        try:
            raw = family.gguf_config(raw, meta)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{source}: {exc}") from None
    return ModelConfig.from_dict(raw, source=source)


def _dequantize(tensor: ReaderTensor, shape: tuple[int, ...], source: str) -> torch.Tensor:
    """float32, in torch's shape."""
    from gguf.quants import dequantize

    try:
        array = dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError:
        raise ModelLoadError(f"{source}: tensor {tensor.name} is stored as {tensor.tensor_type.name}, which the "
                             f"gguf package cannot dequantize.") from None
    array = array.reshape(shape)
    if not array.flags.writeable:  # F32/F16 come back as views of the read-only memory map
        array = array.copy()
    return torch.from_numpy(array).float()


def read_gguf(path: Path, dtype: torch.dtype) -> GGUFContents:
    """Read and dequantize a whole GGUF file (seconds for a 0.5B model: the prepared-weights cache avoids repeats)."""
    source = str(path)
    reader = open_gguf(path)
    meta = read_metadata(reader)
    family = family_for_gguf(meta.get("general.architecture"), source)
    arch = family.gguf_architecture
    unknown = [t.name for t in reader.tensors if gguf_to_hf(t.name, arch) is None]
    if unknown:
        raise ModelLoadError(f"{source}: tensor(s) lucid does not know for a {arch} model: {', '.join(unknown[:5])}.")
    # GGUF lists dimensions fastest-first; torch wants them slowest-first.
    shapes = {gguf_to_hf(t.name, arch): tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
    config = _config_from_metadata(meta, shapes, family, source)
    check_tensor_shapes(shapes, config, source)
    if not meta.get("tokenizer.ggml.tokens"):
        raise ModelLoadError(f"{source}: no tokenizer in the metadata (tokenizer.ggml.tokens is missing).")

    tensors: dict[str, torch.Tensor] = {}
    formats: dict[str, str] = {}
    bar = tqdm(reader.tensors, desc=f"dequantizing {path.name}", unit="tensor", file=sys.stderr, delay=2.0, leave=False)
    for t in bar:
        hf_name = gguf_to_hf(t.name, arch)
        # Layout fix-ups (Llama's q/k row order, Gemma's 1 + w norms) in float32, before rounding to `dtype`.
        tensors[hf_name] = family.gguf_to_hf_tensor(hf_name, _dequantize(t, shapes[hf_name], source), config).to(dtype)
        formats[hf_name] = t.tensor_type.name
    generation_config = {key: meta[f"tokenizer.ggml.{key}"] for key in ("bos_token_id", "eos_token_id")
                         if f"tokenizer.ggml.{key}" in meta}
    name = model_slug(str(meta.get("general.name") or path.stem))
    return GGUFContents(name=name, config=config, generation_config=generation_config,
                        tokenizer_fields={k: meta[k] for k in TOKENIZER_KEYS if k in meta},
                        stored_formats=formats, tensors=tensors)
