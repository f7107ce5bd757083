"""Fused projections and quantized linear layers against the float model they replace."""

import pytest
import torch
from engine_fixtures import run_all, tiny_engine, tiny_model

from lucid import SamplingParams
from lucid.fusion import fuse_projections
from lucid.layers.quantized_linear import Int4Linear, Int8Linear
from lucid.quantize import WeightSource, layer_format, quantize_model


def test_fused_projections_give_the_same_logits():
    model = tiny_model()
    ids = torch.randint(0, 128, (2, 9))
    with torch.inference_mode():
        before = model(ids)
        fuse_projections(model)
        after = model(ids)
    assert model.model.layers[0].self_attn.qkv_proj is not None
    assert not hasattr(model.model.layers[0].mlp, "gate_proj")
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("cls,levels", [(Int8Linear, 254), (Int4Linear, 15)])
def test_quantized_linear_stays_within_its_rounding_error(cls, levels):
    torch.manual_seed(0)
    weight, bias = torch.randn(64, 96) * 0.05, torch.randn(64)
    layer = cls(weight, bias, torch.bfloat16)
    x = torch.randn(3, 5, 96).bfloat16()
    exact = x.float() @ weight.t() + bias
    # Each weight is off by at most half a quantization step (range / levels); the errors add up over
    # 96 inputs roughly as a random walk, so 4 sigma of that sum bounds the output error.
    step = float(weight.abs().max()) * 2 / levels
    bound = 4 * (step / 2) / 3**0.5 * float(x.float().pow(2).sum(-1).sqrt().max()) + 0.02
    assert (layer(x).float() - exact).abs().max() < bound


def test_mixed_scheme_puts_gate_up_in_int4():
    assert layer_format("model.layers.3.mlp.gate_up_proj", "mixed") == "int4"
    assert layer_format("model.layers.3.mlp.down_proj", "mixed") == "int8"
    assert layer_format("model.layers.3.self_attn.qkv_proj", "mixed") == "int8"
    assert layer_format("lm_head", "mixed") == "int8"


# Layer 0 and 2 as the default model's Q4_K_M file stores them.
Q4_K_M_LAYERS = WeightSource({
    **{f"model.layers.{i}.self_attn.{p}_proj.weight": "Q5_0" for i in (0, 2) for p in "qko"},
    **{f"model.layers.{i}.mlp.{p}_proj.weight": "Q5_0" for i in (0, 2) for p in ("gate", "up")},
    "model.layers.0.self_attn.v_proj.weight": "Q8_0", "model.layers.0.mlp.down_proj.weight": "Q6_K",
    "model.layers.2.self_attn.v_proj.weight": "Q5_0", "model.layers.2.mlp.down_proj.weight": "Q4_K",
    "lm_head.weight": "Q8_0", "model.layers.0.input_layernorm.weight": "F32",
})


@pytest.mark.parametrize("scheme, expected", [
    # mixed: Q4_K's blocks are lucid's int4 as they are, so int4 there costs nothing; Q6_K and Q5_0 attention stay int8
    ("mixed", {"model.layers.2.mlp.down_proj": "int4", "model.layers.0.mlp.down_proj": "int8",
               "model.layers.2.mlp.gate_up_proj": "int4", "model.layers.2.self_attn.qkv_proj": "int8",
               "model.layers.2.self_attn.o_proj": "int8", "lm_head": "int8"}),
    # auto follows the bits the file stored each matrix in. A fused layer takes the widest of its parts: layer 0's
    # v_proj is Q8_0, so its whole qkv stays int8.
    ("auto", {"model.layers.2.mlp.down_proj": "int4", "model.layers.0.mlp.down_proj": "int8",
              "model.layers.2.self_attn.qkv_proj": "int4", "model.layers.0.self_attn.qkv_proj": "int8",
              "model.layers.0.self_attn.o_proj": "int4", "lm_head": "int8"}),
])
def test_matrices_stored_in_4_bit_blocks_go_to_int4(scheme, expected):
    assert {name: layer_format(name, scheme, source=Q4_K_M_LAYERS) for name in expected} == expected


def test_auto_on_a_float_checkpoint_is_mixed():
    floats = WeightSource({"model.layers.0.mlp.down_proj.weight": "BF16", "model.layers.0.mlp.gate_proj.weight": "BF16",
                           "model.layers.0.mlp.up_proj.weight": "BF16"})
    for name in ("model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_up_proj", "lm_head"):
        assert layer_format(name, "auto", source=floats) == layer_format(name, "mixed")
        assert layer_format(name, "auto") == layer_format(name, "mixed")


@pytest.mark.parametrize("scheme", ["int8", "int4", "mixed", "auto"])
def test_quantized_engine_runs_and_mostly_agrees(scheme):
    float_model = tiny_model(torch.bfloat16)
    prompts = [[1, 2, 3, 4], [9, 8, 7]]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    expected = [o.outputs[0].token_ids for o in run_all(tiny_engine(float_model), prompts, params)]
    quantized = quantize_model(fuse_projections(tiny_model(torch.bfloat16)), scheme)
    assert not any(isinstance(m, torch.nn.Linear) for m in quantized.modules())
    got = [o.outputs[0].token_ids for o in run_all(tiny_engine(quantized), prompts, params)]
    assert all(len(g) == 8 for g in got)
    if scheme == "int8":  # int8 rounding barely moves a sharp random model's argmax
        assert got[0][0] == expected[0][0] and got[1][0] == expected[1][0]
