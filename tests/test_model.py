"""The model's structure: HF names, tied head, shapes, cached decoding, dtypes."""

import json

import pytest
import torch

from lucid.config import ModelConfig
from lucid.errors import ModelLoadError
from lucid.loader import read_checkpoint
from lucid.models.qwen2 import Qwen2ForCausalLM, build_model

CONFIG_05B = "tests/data/qwen2-0.5b-instruct.config.json"


def test_state_dict_keys_equal_the_checkpoints(tiny_model):
    checkpoint = read_checkpoint(tiny_model.hf_dir, torch.float32)
    model = build_model(checkpoint.config, checkpoint.tensors, torch.float32)
    assert set(model.state_dict()) == set(checkpoint.tensors)


def test_tied_head_shares_the_parameter_and_is_counted_once():
    config = ModelConfig.from_json(CONFIG_05B)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert sum(p.numel() for p in model.parameters()) == 494_032_768
    layer = model.model.layers[0]
    assert sum(p.numel() for p in layer.parameters()) == 14_912_384
    # A tied checkpoint needs no lm_head.weight; build_model accepts it either way.
    assert "lm_head.weight" in model.state_dict()


def test_untied_head_is_separate():
    raw = json.loads(open(CONFIG_05B).read()) | {"tie_word_embeddings": False}
    with torch.device("meta"):
        model = Qwen2ForCausalLM(ModelConfig.from_dict(raw))
    assert sum(p.numel() for p in model.parameters()) == 630_167_424


def test_shapes_and_dtypes(tiny_model):
    checkpoint = read_checkpoint(tiny_model.hf_dir, torch.float32)
    for dtype in (torch.float32, torch.bfloat16):
        model = build_model(checkpoint.config, checkpoint.tensors, dtype)
        ids = torch.randint(0, checkpoint.config.vocab_size, (2, 7))
        logits = model(ids)
        assert logits.shape == (2, 7, checkpoint.config.vocab_size) and logits.dtype == torch.float32
        assert model.model.layers[0].self_attn.q_proj.weight.dtype == dtype


def test_build_model_rejects_a_wrong_shape_naming_the_tensor(tiny_model):
    checkpoint = read_checkpoint(tiny_model.hf_dir, torch.float32)
    tensors = dict(checkpoint.tensors)
    tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(ModelLoadError, match="model.layers.1.mlp.up_proj.weight"):
        build_model(checkpoint.config, tensors, torch.float32)
