"""One frozen config for the model (from config.json or GGUF metadata) and one for the engine's limits."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lucid.engine.speculative import SpeculativeConfig
from lucid.errors import ModelLoadError

# Weight formats kept in memory (lucid/quantize.py). The default is the fastest whose quality holds on the
# default model: perplexity within 1% of bf16 (docs/BENCHMARKS.md), where int4 everywhere loses 4.7% and `auto`
# (the GGUF's bits for every matrix, Q5_0 attention in int4) 2.3% against llama.cpp.
QUANTIZATION_SCHEMES = ("none", "int8", "int4", "mixed", "auto")
DEFAULT_QUANTIZATION = "mixed"


@dataclass(frozen=True)
class ModelConfig:
    """The shapes and constants of a decoder-only model (Qwen2, Qwen3, Llama, Gemma 3). Unknown keys of config.json
    are dropped; the family-specific ones default to "not used", so a Qwen2 config reads as before."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    torch_dtype: str = "bfloat16"
    architectures: tuple[str, ...] = ("Qwen2ForCausalLM",)
    model_type: str = "qwen2"
    # None: hidden_size / num_attention_heads. Qwen3 and Gemma 3 set it explicitly (and it may differ).
    head_dim: int | None = None  # type: ignore[assignment]  (always an int after __post_init__)
    attention_bias: bool = False          # Llama / Qwen3 / Gemma 3 (Qwen2 always has q/k/v bias)
    hidden_act: str = "silu"              # "gelu_pytorch_tanh" for Gemma 3 (HF calls it hidden_activation there)
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "llama3" | "linear", "factor": ...}
    sliding_window: int | None = None     # Gemma 3's local layers: keys within this many positions (self included)
    layer_types: tuple[str, ...] | None = None  # per layer "sliding_attention" or "full_attention" (Gemma 3)
    rope_local_base_freq: float = 10_000.0  # Gemma 3's sliding layers rotate with this base
    query_pre_attn_scalar: float | None = None  # Gemma 3: scores scaled by this ** -0.5 instead of head_dim ** -0.5

    def __post_init__(self) -> None:
        if self.layer_types is not None and len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers")
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                                 f"{self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )

    def is_sliding(self, layer: int) -> bool:
        """Whether decoder layer `layer` attends only within `sliding_window` (Gemma 3's local layers)."""
        return bool(self.sliding_window and self.layer_types and self.layer_types[layer] == "sliding_attention")

    @property
    def eos_token_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
        from lucid.models.registry import family_for_config  # the registry knows the families (and imports torch)

        model_type = raw.get("model_type", "qwen2" if not raw.get("architectures") else None)
        family = family_for_config(tuple(raw.get("architectures") or ()), model_type, source)
        architectures = tuple(raw.get("architectures") or family.hf_architectures[:1])
        raw = family.normalize_config(_flatten_rope_parameters(raw))
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in raw.items() if k in known}
        kwargs["architectures"] = architectures
        kwargs["model_type"] = family.model_types[0]
        kwargs.setdefault("num_key_value_heads", raw.get("num_attention_heads"))
        if kwargs.get("layer_types") is not None:
            kwargs["layer_types"] = tuple(kwargs["layer_types"])
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in kwargs]
        if missing:
            raise ModelLoadError(f"{source}: required keys are missing: {', '.join(missing)}.")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelLoadError(f"{path}: no such file.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path}: not valid JSON ({exc}).") from None
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{path}: expected a JSON object.")
        return cls.from_dict(raw, source=str(path))

    def to_hf_dict(self) -> dict[str, Any]:
        """config.json as Hugging Face transformers writes it for this family (read back by `from_dict`)."""
        from lucid.models.registry import family_of

        d = asdict(self)
        d["architectures"] = list(self.architectures)
        d["layer_types"] = list(self.layer_types) if self.layer_types else None
        d.update(use_cache=True, attention_dropout=0.0, initializer_range=0.02)
        return family_of(self).hf_config_extras(d)


def _flatten_rope_parameters(raw: dict[str, Any]) -> dict[str, Any]:
    """transformers 5 writes rope settings as `rope_parameters` ({"rope_theta": ..., "rope_type": ...}, or one such
    dict per layer type for Gemma 3); older files use `rope_theta` / `rope_scaling`. Read both into the flat keys."""
    params = raw.get("rope_parameters")
    if not isinstance(params, dict):
        return raw
    raw = dict(raw)
    if "full_attention" in params:  # per layer type (Gemma 3)
        local = params.get("sliding_attention") or {}
        if "rope_theta" in local:
            raw.setdefault("rope_local_base_freq", local["rope_theta"])
        params = params["full_attention"]
    if "rope_theta" in params:
        raw.setdefault("rope_theta", params["rope_theta"])
    if params.get("rope_type", "default") != "default":
        raw.setdefault("rope_scaling", {k: v for k, v in params.items() if k != "rope_theta"})
    return raw


@dataclass(frozen=True)
class EngineConfig:
    """Limits of the serving engine. Every one has a default that suits a small model on a CPU box."""

    max_num_seqs: int = 16            # sequences advanced together in one step
    max_model_len: int = 8192         # prompt + output tokens of one sequence
    block_size: int = 16              # tokens per KV block
    # Bytes for the KV block pool; None: max_num_seqs x max_model_len tokens, capped by a share of free memory
    # (lucid/engine/kv_pool.py).
    kv_cache_memory: int | None = None
    max_num_batched_tokens: int = 512  # token budget of one step (chunked prefill)
    # While other sequences are decoding, prefill at most this many prompt tokens per step, so a long prompt
    # arriving adds little to the running streams' inter-token latency (0: no separate limit).
    max_prefill_tokens_while_decoding: int = 32
    max_queue: int = 256              # waiting requests before new ones get 429
    enable_prefix_caching: bool = True
    # Decode-only steps run the whole decoder stack in one C++ call (lucid/kernels/decode.h) when the model is
    # quantized with lucid's kernels; True keeps every step on the eager PyTorch model (the reference path).
    enforce_eager: bool = False
    # Compute threads; None: the CPUs this process may use (affinity mask and cgroup quota, lucid.threads).
    num_threads: int | None = None
    # N-gram speculative decoding (engine/speculative.py); None: off.
    speculative: SpeculativeConfig | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_model_len", "block_size", "kv_cache_memory", "max_num_batched_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {self.num_threads}")


def parse_size(text: str | int) -> int:
    """'512M', '2G', '1.5GiB', '1000000' -> bytes."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if s and s[-1] in units:
            return int(float(s[:-1]) * units[s[-1]])
        return int(float(s))
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M, 2G)") from None
