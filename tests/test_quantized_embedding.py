"""Quantized embeddings: a tied model's q8 head whose rows the embedding reads, and an untied q8 table."""

from dataclasses import replace

import pytest
import torch

from lucid import kernels
from lucid.layers.quantized_embedding import Q8Embedding
from lucid.models.qwen2 import Qwen2ForCausalLM, build_model
from lucid.quantize import fuse_and_quantize, packed_model, packed_state
from tests.engine_fixtures import TINY

pytestmark = pytest.mark.skipif(not kernels.available(), reason="lucid's CPU kernels are not available here")

TIED = replace(TINY, vocab_size=120, tie_word_embeddings=True)   # 120 rows: the last q8 group is padded


def tied_model(dtype: torch.dtype = torch.bfloat16) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    reference = Qwen2ForCausalLM(TIED)
    for p in reference.parameters():
        torch.nn.init.normal_(p, std=0.3)
    state = {k: v.detach().clone() for k, v in reference.state_dict().items() if k != "lm_head.weight"}
    return build_model(TIED, state, dtype)


def test_tied_head_is_q8_and_the_embedding_reads_its_dequantized_rows():
    model = fuse_and_quantize(tied_model(), "mixed")
    embed, head = model.model.embed_tokens, model.lm_head
    assert isinstance(embed, Q8Embedding) and type(head).__name__ == "Q8Linear"
    ids = torch.tensor([[0, 5, 17, 119], [16, 15, 31, 64]])
    expected = head.dequantized()[ids].to(torch.bfloat16)                       # the kernel's own dequantizer
    assert torch.equal(embed(ids), expected)
    assert not any(name.startswith("model.embed_tokens") for name in model.state_dict())  # no float table kept


def test_quantized_rows_stay_close_to_the_float_table():
    float_model = tied_model(torch.float32)
    table = float_model.model.embed_tokens.weight.detach().clone()
    model = fuse_and_quantize(float_model, "mixed")
    ids = torch.arange(TIED.vocab_size)
    error = (model.model.embed_tokens(ids).float() - table).abs().max()
    assert 0 < error <= table.abs().max() / 127 / 2 + 1e-6                      # within half a q8 step


def test_packed_round_trip_rebuilds_the_same_model():
    model = fuse_and_quantize(tied_model(), "mixed")
    rebuilt = packed_model(TIED, packed_state(model), "mixed", torch.bfloat16)
    assert isinstance(rebuilt.model.embed_tokens, Q8Embedding)
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.inference_mode():
        assert torch.equal(model(ids), rebuilt(ids))


UNTIED = replace(TINY, vocab_size=120, tie_word_embeddings=False)


def untied_model(dtype: torch.dtype = torch.bfloat16) -> Qwen2ForCausalLM:
    torch.manual_seed(1)
    reference = Qwen2ForCausalLM(UNTIED)
    for p in reference.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return build_model(UNTIED, {k: v.detach().clone() for k, v in reference.state_dict().items()}, dtype)


def test_untied_embedding_is_its_own_q8_table_within_half_a_step_of_the_float_one():
    float_model = untied_model(torch.float32)
    table = float_model.model.embed_tokens.weight.detach().clone()
    head = float_model.lm_head.weight.detach().clone()
    model = fuse_and_quantize(float_model, "mixed")
    embed = model.model.embed_tokens
    assert isinstance(embed, Q8Embedding) and embed.head is None
    state = model.state_dict()
    assert {k for k in state if k.startswith("model.embed_tokens")} == {"model.embed_tokens.qweight",
                                                                          "model.embed_tokens.scales"}
    assert state["model.embed_tokens.qweight"].dtype == torch.uint8             # 1 byte a weight, not 2 or 4
    rows = embed(torch.arange(UNTIED.vocab_size)).float()
    step = table.reshape(UNTIED.vocab_size, -1, kernels.QK).abs().amax(-1) / 127  # (rows, blocks): each block's
    error = (rows - table).abs().reshape(UNTIED.vocab_size, -1, kernels.QK).amax(-1)
    assert 0 < error.max() and bool((error <= step / 2 + 1e-6).all())             # within half of its own step
    assert not torch.equal(model.lm_head.dequantized(), table)                    # the head is not the embedding
    assert torch.allclose(model.lm_head.dequantized(), head, atol=float(head.abs().max()) / 127)


def test_untied_lookup_keeps_the_ids_shape_and_the_dtype():
    model = fuse_and_quantize(untied_model(), "mixed")
    out = model.model.embed_tokens(torch.tensor([[0, 119, 64], [16, 15, 1]]))
    assert out.shape == (2, 3, UNTIED.hidden_size) and out.dtype == torch.bfloat16


def test_untied_packed_round_trip_rebuilds_the_same_model():
    model = fuse_and_quantize(untied_model(), "mixed")
    state = packed_state(model)
    assert "model.embed_tokens.weight" not in state
    rebuilt = packed_model(UNTIED, state, "mixed", torch.bfloat16)
    assert isinstance(rebuilt.model.embed_tokens, Q8Embedding) and rebuilt.model.embed_tokens.head is None
    ids = torch.tensor([[3, 4, 5, 6, 7, 119]])
    with torch.inference_mode():
        assert torch.equal(model(ids), rebuilt(ids))
