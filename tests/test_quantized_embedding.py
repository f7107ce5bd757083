"""A tied model's quantized head and the embedding that reads its rows from it."""

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
