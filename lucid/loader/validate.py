"""What tensors a Qwen2 checkpoint must hold, and a check that names the file when it does not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lucid.config import ModelConfig
from lucid.errors import ModelLoadError

_MAX_LISTED = 5  # a message lists this many names, then counts the rest


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> torch shape, for every tensor the model needs (lm_head only when untied)."""
    h, inter, v = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (v, h)
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.q_proj.bias": (h,),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
        })
    return shapes


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def check_tensor_shapes(found: Mapping[str, tuple[int, ...]], config: ModelConfig, source: str) -> None:
    """Raise ModelLoadError unless `found` (HF name -> shape) is exactly what `config` needs.

    A tied model may still carry lm_head.weight (some exporters write it); it is accepted and later ignored.
    """
    want = expected_shapes(config)
    missing = [n for n in want if n not in found]
    unexpected = [n for n in found if n not in want and not (n == "lm_head.weight" and config.tie_word_embeddings)]
    wrong = [f"{n} is {list(found[n])}, expected {list(s)}" for n, s in want.items()
             if n in found and tuple(found[n]) != s]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing: {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_listed(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape: {_listed(wrong)}")
    if problems:
        raise ModelLoadError(
            f"{source}: the tensors do not match a Qwen2 model with {config.num_hidden_layers} layers, hidden size "
            f"{config.hidden_size} and vocabulary {config.vocab_size}: " + "; ".join(problems) + "."
        )
