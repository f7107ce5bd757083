"""Both loaders on the tiny model: the HF folder and the GGUF file must give the same model."""

from __future__ import annotations

import gguf
import pytest
import torch
from gguf.quants import dequantize

from lucid.loader import load, read_checkpoint
from lucid.loader.names import GLOBAL_NAMES, LAYER_NAMES, gguf_to_hf, hf_to_gguf
from lucid.loader.validate import expected_shapes
from lucid.testing import TinyModel

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def both(tiny_model: TinyModel):
    return read_checkpoint(tiny_model.hf_dir, torch.float32), read_checkpoint(tiny_model.gguf_path, torch.float32)


def test_same_tensor_names_and_values(both) -> None:
    hf, gg = both
    assert set(hf.tensors) == set(gg.tensors) == set(expected_shapes(hf.config))
    for name in hf.tensors:
        # The tiny model's fp32 weights sit on the GGUF's quantization grids, so even quantized tensors match exactly.
        assert torch.equal(hf.tensors[name], gg.tensors[name]), name


def test_quantized_tensors_match_the_gguf_package(tiny_model: TinyModel, both) -> None:
    _, gg = both
    reader = gguf.GGUFReader(tiny_model.gguf_path)
    for t in reader.tensors:
        reference = torch.from_numpy(dequantize(t.data, t.tensor_type).copy())
        ours = gg.tensors[gguf_to_hf(t.name)]
        assert ours.shape == reference.shape, t.name
        torch.testing.assert_close(ours, reference, rtol=0, atol=0, msg=t.name)


def test_tiny_gguf_holds_every_type_the_default_model_uses(tiny_model: TinyModel, both) -> None:
    _, gg = both
    wanted = {"Q5_0", "Q8_0", "Q6_K", "Q4_K", "F32", "F16", "BF16"}
    assert set(gg.stored_formats.values()) == wanted
    assert set(tiny_model.gguf_types.values()) == wanted
    assert {gguf_to_hf(n): t for n, t in tiny_model.gguf_types.items()} == gg.stored_formats


def test_configs_agree(both, tiny_model: TinyModel) -> None:
    hf, gg = both
    assert hf.config == tiny_model.config
    # The GGUF says nothing of the dtype the weights were trained in; everything else must match.
    assert gg.config.__class__(**{**gg.config.__dict__, "torch_dtype": "float32"}) == hf.config
    assert not gg.config.tie_word_embeddings
    assert gg.config.vocab_size % 64 == 0
    assert gg.generation_config["eos_token_id"] == hf.generation_config["eos_token_id"] == hf.config.eos_token_id
    assert gg.name == "tiny-qwen2" and hf.name == "hf"


def test_tokenizers_agree(both) -> None:
    hf, gg = both
    texts = ["Hello, world!", "你好，世界！详细介绍下你自己。", "emoji 😀🚀 and code: def f(x): return x**2\n\tdone",
             "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"]
    for text in texts:
        ids = hf.tokenizer.encode(text)
        assert ids == gg.tokenizer.encode(text), text
        assert hf.tokenizer.decode(ids, skip_special_tokens=False) == text
    messages = [{"role": "user", "content": "What is 1+1?"}]
    prompt = hf.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == gg.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert hf.tokenizer.eos_token_id == gg.tokenizer.eos_token_id == hf.config.eos_token_id


def test_name_table_round_trips() -> None:
    assert len(GLOBAL_NAMES) == 3 and len(LAYER_NAMES) == 12
    for gguf_name, hf_name in GLOBAL_NAMES.items():
        assert gguf_to_hf(gguf_name) == hf_name and hf_to_gguf(hf_name) == gguf_name
    for part in LAYER_NAMES:
        hf_name = gguf_to_hf(f"blk.17.{part}")
        assert hf_name is not None and hf_name.startswith("model.layers.17.")
        assert hf_to_gguf(hf_name) == f"blk.17.{part}"
    assert gguf_to_hf("blk.0.attn_qkv.weight") is None and hf_to_gguf("model.rotary.inv_freq") is None


def test_name_table_covers_every_tiny_tensor(tiny_model: TinyModel) -> None:
    reader = gguf.GGUFReader(tiny_model.gguf_path)
    assert sorted(gguf_to_hf(t.name) for t in reader.tensors) == sorted(expected_shapes(tiny_model.config))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_tensors_come_in_the_asked_dtype(tiny_model: TinyModel, dtype: torch.dtype) -> None:
    for path in (tiny_model.hf_dir, tiny_model.gguf_path):
        checkpoint = read_checkpoint(path, dtype)
        assert {t.dtype for t in checkpoint.tensors.values()} == {dtype}


def test_stored_formats_of_the_hf_folder(both) -> None:
    hf, _ = both
    assert set(hf.stored_formats.values()) == {"F32"}
    assert set(hf.stored_formats) == set(hf.tensors)


def test_load_builds_the_same_model_from_both(tiny_model: TinyModel) -> None:
    from_hf = load(tiny_model.hf_dir, dtype="float32")
    from_gguf = load(str(tiny_model.gguf_path), dtype=torch.float32)
    assert from_hf.name == "hf" and from_gguf.name == "tiny-qwen2"
    assert from_hf.config.vocab_size == from_gguf.config.vocab_size
    sd_hf, sd_gguf = from_hf.model.state_dict(), from_gguf.model.state_dict()
    assert set(sd_hf) == set(sd_gguf)
    for name in sd_hf:
        assert torch.equal(sd_hf[name], sd_gguf[name]), name


def test_read_checkpoint_accepts_files_inside_an_hf_folder(tiny_model: TinyModel) -> None:
    checkpoint = read_checkpoint(tiny_model.hf_dir / "model.safetensors")
    assert checkpoint.path == tiny_model.hf_dir
    assert checkpoint.tensors["model.norm.weight"].dtype == torch.bfloat16
