"""What every family's model shares: the embedding -> decoder layers -> final norm stack, the lm_head (tied by
sharing the Parameter), logits, and the strict builder that moves checkpoint tensors into place.

A family file (qwen2.py, qwen3.py, llama.py, gemma3.py) names its classes as Hugging Face does and says how its
decoder layer is wired; nothing here knows which family it runs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.layers.attention_metadata import AttentionMetadata
from lucid.layers.rmsnorm import RMSNorm


class PreNormDecoderLayer(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)): the layer of Qwen2, Qwen3 and Llama."""

    def __init__(self, config: ModelConfig, self_attn: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.mlp = mlp
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata | None) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), positions, meta)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))

    def fused_norms(self) -> dict[str, nn.Module]:
        """The layer's norms by the role the fused C++ step gives them: "input" (before attention), "pre_mlp", and
        optionally "attn_out" / "mlp_out" (on a block's output before it joins the residual)."""
        return {"input": self.input_layernorm, "pre_mlp": self.post_attention_layernorm}


class DecoderModel(nn.Module):
    """embed_tokens -> layers -> norm. Subclasses build `layers` and may scale the embeddings (Gemma)."""

    embed_scale: float | None = None

    def __init__(self, config: ModelConfig, layers: list[nn.Module], norm: nn.Module) -> None:
        super().__init__()
        shape = (config.vocab_size, config.hidden_size)
        self.embed_tokens = nn.Embedding(*shape, _weight=torch.empty(shape))
        # Random values only off the meta device (where models are built for loading): `normal_` on meta goes
        # through torch._refs, whose first use imports torch._dynamo, seconds of every start-up.
        if not self.embed_tokens.weight.is_meta:
            nn.init.normal_(self.embed_tokens.weight)
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The token embeddings the first layer takes (the fused step starts here too)."""
        hidden = self.embed_tokens(input_ids)
        if self.embed_scale is not None:  # rounded to the activations' dtype first, as HF does
            hidden = hidden * torch.tensor(self.embed_scale, dtype=hidden.dtype)
        return hidden

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                meta: AttentionMetadata | None = None) -> torch.Tensor:
        hidden = self.embed(input_ids)
        for layer in self.layers:
            hidden = layer(hidden, positions, meta)
        return self.norm(hidden)


class CausalLM(nn.Module):
    """model (a DecoderModel) + lm_head. `model_class` is the family's DecoderModel subclass."""

    model_class: type[DecoderModel]
    # The linear layers `-q mixed` stores in int4 (every other one is int8): the MLP's gate/up, where int4 costs
    # the least quality. A family whose model loses too much there names fewer (lucid.quantize reads this).
    mixed_int4_layers: tuple[str, ...] = ("gate_proj", "up_proj", "gate_up_proj")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = self.model_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            # Share the Parameter itself, so it is stored and counted once.
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
                meta: AttentionMetadata | None = None) -> torch.Tensor:
        """Logits for every position. Without `meta`: input_ids (T,) or (B, T), causal, no cache.

        The engine instead calls `self.model(...)` then `compute_logits` on the last position of each sequence only.
        """
        if positions is None:
            positions = torch.arange(input_ids.shape[-1], device=input_ids.device).expand_as(input_ids)
        return self.compute_logits(self.model(input_ids, positions, meta))

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., hidden_size) -> float32 logits (..., vocab_size)."""
        if isinstance(self.lm_head, nn.Linear):  # a float head (tied to the embedding): the fused step hands float32
            hidden = hidden.to(self.lm_head.weight.dtype)
        return self.lm_head(hidden).float()

    def shift_cached_keys(self, keys: torch.Tensor, shift: int) -> torch.Tensor:
        """Keys as the K/V pool holds them, (layers, L, kv_heads, head_dim), already rotated for their positions,
        moved `shift` positions on: each layer's RoPE rotates once more by `shift` (engine/kv_reuse.py)."""
        return torch.stack([layer.self_attn.rotary_emb.shift(keys[i], shift)
                            for i, layer in enumerate(self.model.layers)])

    @classmethod
    def fused_step_blocker(cls, config: ModelConfig) -> str | None:
        """Why the fused C++ step (lucid/kernels/decode.h: pre-norm layers with optional q/k and output norms,
        plain RoPE with a base per layer, optional sliding windows, SwiGLU or GELU-tanh) cannot run this family's
        model, or None when it can. A family that fits the kernel overrides this."""
        return f"the fused kernel does not implement {cls.__name__}'s layer"


def build_model(config: ModelConfig, state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16,
                device: str | torch.device = "cpu", source: str = "checkpoint") -> CausalLM:
    """Build the config's family on the meta device, then move every checkpoint tensor into place; strict about
    names and shapes."""
    from lucid.models.registry import model_class_for

    with torch.device("meta"):
        model = model_class_for(config)(config)
    family = type(model).__name__
    expected = {name: p.shape for name, p in model.named_parameters()}  # tied head appears once, as embed_tokens
    given = set(state_dict.keys())
    if config.tie_word_embeddings:
        given.discard("lm_head.weight")
    missing = sorted(expected.keys() - given)
    unexpected = sorted(given - expected.keys())
    if missing:
        raise ModelLoadError(f"{source}: {len(missing)} tensor(s) the model needs are missing, e.g. "
                             f"{', '.join(missing[:5])}. The file is incomplete or not a {family} model.")
    if unexpected:
        raise ModelLoadError(f"{source}: {len(unexpected)} tensor(s) do not belong to a {family} model of this "
                             f"config, e.g. {', '.join(unexpected[:5])}.")
    params: dict[str, torch.Tensor] = {}
    for name, shape in expected.items():
        tensor = state_dict[name]
        if tuple(tensor.shape) != tuple(shape):
            raise ModelLoadError(f"{source}: tensor {name} has shape {list(tensor.shape)}, but the config "
                                 f"(hidden {config.hidden_size}, heads {config.num_attention_heads}/"
                                 f"{config.num_key_value_heads}, vocab {config.vocab_size}) needs {list(shape)}.")
        params[name] = nn.Parameter(tensor.to(device=device, dtype=dtype), requires_grad=False)
    model.load_state_dict(params, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()


def expected_weight_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape for every tensor a checkpoint of this config must hold (a tied head has none)."""
    from lucid.models.registry import model_class_for

    with torch.device("meta"):
        model = model_class_for(config)(config)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}
