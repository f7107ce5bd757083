"""convert_gguf_to_hf: the folder it writes loads in HF transformers and in lucid, with the original's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lucid.loader import convert_gguf_to_hf, read_checkpoint
from lucid.testing import TinyModel

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def converted(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_gguf_to_hf(tiny_model.gguf_path, tmp_path_factory.mktemp("converted") / "hf")


def test_convert_writes_a_complete_folder(converted: Path, tiny_model: TinyModel) -> None:
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (converted / name).is_file(), name
    config = json.loads((converted / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["torch_dtype"] == "bfloat16"
    generation = json.loads((converted / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tiny_model.config.eos_token_id
    assert generation["bos_token_id"] == tiny_model.config.bos_token_id
    assert "chat_template" in json.loads((converted / "tokenizer_config.json").read_text()) \
        or (converted / "chat_template.jinja").is_file()


def test_lucid_reads_the_converted_folder(converted: Path, tiny_model: TinyModel) -> None:
    back = read_checkpoint(converted, torch.float32)
    original = read_checkpoint(tiny_model.hf_dir, torch.float32)
    assert set(back.stored_formats.values()) == {"BF16"}
    for name, tensor in original.tensors.items():
        assert torch.equal(back.tensors[name], tensor.to(torch.bfloat16).float()), name
    text = "<|im_start|>user\n你好 hello 😀<|im_end|>"
    assert back.tokenizer.encode(text) == original.tokenizer.encode(text)


def test_transformers_loads_it_with_the_original_logits(converted: Path, tiny_model: TinyModel) -> None:
    transformers = pytest.importorskip("transformers")
    original = transformers.AutoModelForCausalLM.from_pretrained(tiny_model.hf_dir, dtype=torch.float32).eval()
    model = transformers.AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    with torch.no_grad():  # the converted folder is bf16: compare with the original rounded the same way
        for p in original.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    tokenizer = transformers.AutoTokenizer.from_pretrained(converted)
    original_tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model.hf_dir)
    messages = [{"role": "user", "content": "详细介绍下你自己。 Tell me about yourself! 🚀"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == original_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert ids.tolist() == original_tokenizer(prompt, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        logits = model(ids).logits
        reference = original(ids).logits
    assert torch.equal(logits, reference)
    assert logits[0, -1].std() > 0.5, "the tiny model's logits should not be flat"
