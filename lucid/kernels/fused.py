"""The fused step: hand a fused, quantized model whose family fits the kernel (Qwen2, Llama) to the C++
`FusedDecoder` (decode.h) once, then run a whole step's decoder stack in one call.

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
    if model.config.head_dim not in (16, 32, 64, 128):
        return f"head_dim {model.config.head_dim} is not 16, 32, 64 or 128"
    if model.config.num_attention_heads // model.config.num_key_value_heads > 16:
        return "more than 16 query heads share a KV head"
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        parts = [attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj]
        if not all(isinstance(p, _QuantLinear) for p in parts):
            return f"layer {i} is not fused and quantized with lucid's kernels (use --quantization int8/int4/mixed)"
    return None


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

    def f32(norm: torch.nn.Module) -> torch.Tensor:
        return norm.weight.detach().float().contiguous()

    decoder = kernels.ext().FusedDecoder(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                                         cfg.head_dim, cfg.intermediate_size, cfg.rms_norm_eps, cfg.rope_theta,
                                         f32(model.model.norm))
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        decoder.add_layer(f32(layer.input_layernorm), f32(layer.post_attention_layernorm),
                          _linear_spec(attn.qkv_proj), _linear_spec(attn.o_proj),
                          _linear_spec(mlp.gate_up_proj), _linear_spec(mlp.down_proj),
                          attn.k_cache, attn.v_cache)
    return decoder

