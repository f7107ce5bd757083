"""What tensors a checkpoint must hold (the model's own parameters, built on the meta device), and a check that
names the file when it does not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.models.base import expected_weight_shapes

_MAX_LISTED = 5  # a message lists this many names, then counts the rest
# A stable listing order (whole-model tensors, then layer by layer, norms first): lucid.testing draws random weights
# in this order, so the tiny test models stay the same whatever order the modules are declared in.
_GLOBAL_ORDER = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")
_LAYER_ORDER = ("input_layernorm.weight", "post_attention_layernorm.weight",
                "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
                "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.o_proj.weight",
                "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")


def _listing_key(item: tuple[int, str]) -> tuple[int, int, int]:
    declared, name = item
    if name in _GLOBAL_ORDER:
        return (-1, _GLOBAL_ORDER.index(name), 0)
    _, _, layer, rest = name.split(".", 3)           # model.layers.N.rest
    return (int(layer), _LAYER_ORDER.index(rest) if rest in _LAYER_ORDER else len(_LAYER_ORDER), declared)


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> torch shape, for every tensor the model needs (lm_head only when untied)."""
    shapes = expected_weight_shapes(config)
    ordered = sorted(enumerate(shapes), key=_listing_key)
    return {name: shapes[name] for _, name in ordered}


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
            f"{source}: the tensors do not match a {config.architectures[0]} model with {config.num_hidden_layers} "
            f"layers, hidden size {config.hidden_size} and vocabulary {config.vocab_size}: " + "; ".join(problems) + "."
        )
