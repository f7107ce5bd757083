"""The fused step: hand a fused, quantized model whose family fits the kernel (Qwen2, Llama, Gemma 3) to the C++
`FusedDecoder` (decode.h) once, then run a whole step's decoder stack in one call.

What differs between the families reaches the kernel as per-layer options read off the modules (the layer's
`fused_norms()`, q/k norms, rotary base, score scale, sliding window) and the activation, never as a family name.

The runner sends it decode steps (where PyTorch's per-op overhead dominated) and prompt chunks up to a measured
amount of attention work (ModelRunner._fused_fits). The eager model stays the reference and runs the rest: the
longest prompt chunks, CUDA, unquantized weights, `--enforce-eager`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lucid import kernels
from lucid.kernels.linear import Q4Linear, _QuantLinear
from lucid.models.base import CausalLM

log = logging.getLogger(__name__)
_explained: set[str] = set()  # families whose eager fallback was already logged in this process
# config.hidden_act -> the kernel's name for the gated MLP's activation
KERNEL_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}


def _linear_spec(layer: Any) -> tuple:
    """(format, qs, d, m or None, float32 bias or None, out_features), as FusedDecoder.add_layer takes it."""
    if isinstance(layer, Q4Linear):
        return ("q4", layer.qweight, layer.scales, layer.mins, layer.bias_f32, layer.out_features)
    return ("q8", layer.qweight, layer.scales, None, layer.bias_f32, layer.out_features)


def why_not_fused(model: CausalLM, device: torch.device) -> str | None:
    """None when the fused decode step can run this model; otherwise the reason it cannot."""
    family_reason = model.fused_step_blocker(model.config)  # each family declares whether the kernel fits it
    if family_reason is not None:
        return family_reason
    if device.type != "cpu":
        return f"it is CPU-only (device {device})"
    if not kernels.available():
        return f"lucid's kernels are unavailable ({kernels.unavailable_reason()})"
    if model.config.head_dim not in (16, 32, 64, 128, 256):
        return f"head_dim {model.config.head_dim} is not 16, 32, 64, 128 or 256"
    if model.config.hidden_act not in KERNEL_ACTIVATIONS:
        return f"the fused kernel's MLP has no {model.config.hidden_act} activation"
    if model.config.num_attention_heads // model.config.num_key_value_heads > 16:
        return "more than 16 query heads share a KV head"
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        parts = [attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj]
        if not all(isinstance(p, _QuantLinear) for p in parts):
            return f"layer {i} is not fused and quantized with lucid's kernels (use --quantization int8/int4/mixed)"
        if attn.rotary_emb.scaling:
            return "the fused kernel has no rope scaling"
    return None


def _layer_options(layer: torch.nn.Module) -> dict[str, Any]:
    """add_layer's keyword options for one decoder layer (None / 0 where the layer is as Qwen2's)."""
    attn, norms = layer.self_attn, layer.fused_norms()
    options: dict[str, Any] = {"rope_theta": float(attn.rotary_emb.theta), "scale": float(attn.scaling),
                               "window": int(attn.sliding_window or 0)}
    if hasattr(attn, "q_norm"):
        options.update(q_norm=attn.q_norm.scale_f32(), k_norm=attn.k_norm.scale_f32())
    for role in ("attn_out", "mlp_out"):
        if role in norms:
            options[f"{role}_norm"] = norms[role].scale_f32()
    return options


def build_fused_decoder(model: CausalLM, device: torch.device) -> Any | None:
    """A FusedDecoder over the model's weights and its layers' bound KV caches, or None (reason logged)."""
    reason = why_not_fused(model, device)
    if reason is not None:
        if model.fused_step_blocker(model.config) is not None and reason not in _explained:
            _explained.add(reason)  # a family the kernel does not implement: say so once, louder
            log.warning("fused decode step off for %s: %s; every step runs eagerly",
                        type(model).__name__, reason)
        else:
            log.info("fused decode step off: %s; decode runs eagerly", reason)
        return None
    cfg = model.config
    decoder = kernels.ext().FusedDecoder(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                                         cfg.head_dim, cfg.intermediate_size, cfg.rms_norm_eps, cfg.rope_theta,
                                         model.model.norm.scale_f32(), KERNEL_ACTIVATIONS[cfg.hidden_act])
    for layer in model.model.layers:
        attn, mlp, norms = layer.self_attn, layer.mlp, layer.fused_norms()
        decoder.add_layer(norms["input"].scale_f32(), norms["pre_mlp"].scale_f32(),
                          _linear_spec(attn.qkv_proj), _linear_spec(attn.o_proj),
                          _linear_spec(mlp.gate_up_proj), _linear_spec(mlp.down_proj),
                          attn.k_cache, attn.v_cache, **_layer_options(layer))
    return decoder

