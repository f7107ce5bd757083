"""The Qwen2 decoder, with Hugging Face's module names so checkpoints load by name. No file I/O here."""

from collections.abc import Mapping

import torch
from torch import nn

from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.layers.attention import Qwen2Attention
from lucid.layers.attention_metadata import AttentionMetadata
from lucid.layers.mlp import Qwen2MLP
from lucid.layers.rmsnorm import RMSNorm
from lucid.layers.rotary import RotaryEmbedding


class Qwen2DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, rotary_emb: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = Qwen2Attention(config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                                        rotary_emb)
        self.mlp = Qwen2MLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata | None) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), positions, meta)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class Qwen2Model(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta, config.max_position_embeddings)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(config, rotary_emb) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                meta: AttentionMetadata | None = None) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)
        for layer in self.layers:
            hidden = layer(hidden, positions, meta)
        return self.norm(hidden)


class Qwen2ForCausalLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = Qwen2Model(config)
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
        return self.lm_head(hidden).float()


def expected_weight_names(config: ModelConfig) -> list[str]:
    """The state-dict keys a checkpoint must provide (a tied head has no lm_head.weight of its own)."""
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    return list(model.state_dict(keep_vars=True).keys() - ({"lm_head.weight"} if config.tie_word_embeddings else set()))


def build_model(config: ModelConfig, state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16,
                device: str | torch.device = "cpu", source: str = "checkpoint") -> Qwen2ForCausalLM:
    """Build on the meta device, then move every checkpoint tensor into place; strict about names and shapes."""
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    expected = {name: p.shape for name, p in model.named_parameters()}  # tied head appears once, as embed_tokens
    given = set(state_dict.keys())
    if config.tie_word_embeddings:
        given.discard("lm_head.weight")
    missing = sorted(expected.keys() - given)
    unexpected = sorted(given - expected.keys())
    if missing:
        raise ModelLoadError(f"{source}: {len(missing)} tensor(s) the model needs are missing, e.g. "
                             f"{', '.join(missing[:5])}. The file is incomplete or not a Qwen2 model.")
    if unexpected:
        raise ModelLoadError(f"{source}: {len(unexpected)} tensor(s) do not belong to a Qwen2 model of this config, "
                             f"e.g. {', '.join(unexpected[:5])}.")
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
