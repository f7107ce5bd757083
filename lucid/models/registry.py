"""The families lucid runs, keyed by Hugging Face `architectures` / `model_type` and GGUF `general.architecture`.

Each entry says which model class to build, how to read the family's GGUF metadata and tensor names into HF terms,
and what to write back into config.json. The loader, the engine and the quantizer ask this table; none of them
names a family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lucid.errors import ModelLoadError
from lucid.models import gemma3, llama, qwen2, qwen3

if TYPE_CHECKING:
    import torch

    from lucid.config import ModelConfig
    from lucid.models.base import CausalLM

# A GGUF tensor after dequantization (float32, HF name) -> the tensor HF's layout wants.
TensorFix = Callable[[str, "torch.Tensor", "ModelConfig"], "torch.Tensor"]


def _unchanged(name: str, tensor: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    return tensor


@dataclass(frozen=True)
class ModelFamily:
    name: str
    model_class: type[CausalLM]
    hf_architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    gguf_architecture: str
    gguf_layer_names: dict[str, str]                    # after "blk.N." -> after "model.layers.N."
    gguf_to_hf_tensor: TensorFix = _unchanged           # layout fix-ups llama.cpp's converter applied
    hf_to_gguf_tensor: TensorFix = _unchanged
    # config.json keys -> lucid's names and family defaults (e.g. Gemma's hidden_activation -> hidden_act)
    config_defaults: dict[str, Any] = field(default_factory=dict)
    config_renames: dict[str, str] = field(default_factory=dict)
    # GGUF metadata suffix (after "<arch>.") -> config key, beyond the keys every family has
    gguf_config_keys: dict[str, str] = field(default_factory=dict)
    gguf_config: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None  # (raw, metadata) -> raw

    def normalize_config(self, raw: dict[str, Any]) -> dict[str, Any]:
        """config.json values in lucid's names, with this family's defaults filled in."""
        out = {**self.config_defaults, **raw}
        for theirs, ours in self.config_renames.items():
            if theirs in raw:
                out[ours] = raw[theirs]
        return out

    def hf_config_extras(self, d: dict[str, Any]) -> dict[str, Any]:
        """config.json as transformers writes it for this family (from lucid's flat fields)."""
        d = dict(d)
        d["model_type"] = self.model_types[0]
        d.update(use_sliding_window=False, max_window_layers=d["num_hidden_layers"])  # Qwen's keys; others ignore
        for theirs, ours in self.config_renames.items():
            d[theirs] = d.pop(ours)
        return d


def _gemma3_from_gguf(raw: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    # llama.cpp keeps Gemma 3's fixed choices in code, not in the file: the layer pattern, the local RoPE base, and
    # the query scale (hidden / heads for the 27B model, head_dim otherwise).
    raw["layer_types"] = gemma3.default_layer_types(raw["num_hidden_layers"])
    raw.setdefault("rope_local_base_freq", 10_000.0)
    big = raw["num_hidden_layers"] == 62
    raw["query_pre_attn_scalar"] = raw["hidden_size"] // raw["num_attention_heads"] if big else raw["head_dim"]
    raw["hidden_act"] = "gelu_pytorch_tanh"
    return raw


def _llama_from_gguf(raw: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    kind = meta.get("llama.rope.scaling.type")
    if kind == "linear":
        raw["rope_scaling"] = {"rope_type": "linear", "factor": float(meta["llama.rope.scaling.factor"])}
    elif kind not in (None, "none"):
        raise ModelLoadError(f"rope scaling {kind!r} in a GGUF file is not supported")
    return raw


FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily("qwen2", qwen2.Qwen2ForCausalLM, ("Qwen2ForCausalLM",), ("qwen2",), "qwen2",
                qwen2.GGUF_LAYER_NAMES),
    ModelFamily("qwen3", qwen3.Qwen3ForCausalLM, ("Qwen3ForCausalLM",), ("qwen3",), "qwen3",
                qwen3.GGUF_LAYER_NAMES),
    ModelFamily("llama", llama.LlamaForCausalLM, ("LlamaForCausalLM",), ("llama",), "llama",
                llama.GGUF_LAYER_NAMES, gguf_to_hf_tensor=llama.unpermute_qk, hf_to_gguf_tensor=llama.permute_qk,
                config_defaults={"rope_theta": 10_000.0}, gguf_config=_llama_from_gguf),
    ModelFamily("gemma3", gemma3.Gemma3ForCausalLM, ("Gemma3ForCausalLM",), ("gemma3_text",), "gemma3",
                gemma3.GGUF_LAYER_NAMES, gguf_to_hf_tensor=gemma3.gguf_norms_to_hf,
                hf_to_gguf_tensor=gemma3.hf_norms_to_gguf,
                config_defaults={"hidden_act": "gelu_pytorch_tanh", "rope_theta": 1_000_000.0,
                                 "tie_word_embeddings": True, "query_pre_attn_scalar": 256},
                config_renames={"hidden_activation": "hidden_act"},
                gguf_config_keys={"attention.sliding_window": "sliding_window"}, gguf_config=_gemma3_from_gguf),
)


def supported() -> str:
    return ", ".join(a for f in FAMILIES for a in f.hf_architectures)


def family_for_config(architectures: tuple[str, ...], model_type: str | None, source: str) -> ModelFamily:
    """The family of a config.json (by `architectures`, else `model_type`); ModelLoadError naming the supported ones."""
    for family in FAMILIES:
        if any(a in family.hf_architectures for a in architectures):
            return family
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise ModelLoadError(f"{source}: architecture {list(architectures)} (model_type {model_type!r}) is not "
                         f"supported; lucid runs {supported()} models.")


def family_for_gguf(arch: str | None, source: str) -> ModelFamily:
    for family in FAMILIES:
        if family.gguf_architecture == arch:
            return family
    names = ", ".join(f.gguf_architecture for f in FAMILIES)
    raise ModelLoadError(f"{source}: architecture {arch!r} is not supported; lucid runs {names} models "
                         f"({supported()}).")


def family_of(config: ModelConfig) -> ModelFamily:
    return family_for_config(config.architectures, config.model_type, "config")


def model_class_for(config: ModelConfig) -> type[CausalLM]:
    """The class to build for a config: the engine, loader and quantizer ask here, never name a class."""
    return family_of(config).model_class
