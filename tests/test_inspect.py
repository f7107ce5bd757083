"""`lucid inspect`: module tree, exact tie-aware parameter counts, bytes, and the one-tensor view."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lucid.cli import main
from lucid.config import ModelConfig
from lucid.inspect.params import count_parameters, count_unique
from lucid.inspect.report import inspect_model, meta_model
from lucid.inspect.sizes import kv_bytes_per_token, stored_sizes
from lucid.inspect.tensors import summarize_tensor
from lucid.inspect.tree import build_tree, tree_lines

pytestmark = pytest.mark.timeout(120)

CONFIG_PATH = Path(__file__).parent / "data" / "qwen2-0.5b-instruct.config.json"
Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def qwen_config() -> ModelConfig:
    return ModelConfig.from_json(CONFIG_PATH)


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model):
    from lucid.loader import load

    return load(tiny_model.gguf_path, dtype="float32")


def test_qwen2_config_counts_match_the_reference_table(qwen_config):
    report = count_parameters(meta_model(qwen_config))
    parts = {p.name: p for p in report.layer_parts}
    assert parts["self_attn.q_proj"].count == 803_712 and parts["self_attn.q_proj"].formula == "896×896 + 896"
    assert parts["self_attn.k_proj"].count == parts["self_attn.v_proj"].count == 114_816
    assert parts["self_attn.o_proj"].count == 802_816
    assert {parts[f"mlp.{n}_proj"].count for n in ("gate", "up", "down")} == {4_358_144}
    assert parts["input_layernorm"].count + parts["post_attention_layernorm"].count == 1_792
    assert report.per_layer == 14_912_384
    assert report.layers_total == 357_897_216
    other = {p.name: p for p in report.other_parts}
    assert other["model.embed_tokens"].count == 136_134_656 and other["model.norm"].count == 896
    assert other["lm_head"].count == 0 and "tied" in other["lm_head"].note
    assert report.tied_head
    assert report.total == 494_032_768


def test_kv_bytes_per_token(qwen_config):
    assert kv_bytes_per_token(qwen_config, torch.bfloat16) == 12_288
    assert kv_bytes_per_token(qwen_config, torch.float32) == 24_576


def test_tree_has_the_reference_shape(qwen_config):
    model = meta_model(qwen_config)
    text = "\n".join(tree_lines(build_tree(model, tied=count_parameters(model).shared)))
    assert text.splitlines()[0] == "Qwen2ForCausalLM"
    for expected in ("  model: Qwen2Model", "    embed_tokens: Embedding(151936, 896)",
                     "    layers: 24 x Qwen2DecoderLayer", "q_proj Linear(896→896, bias)",
                     "k_proj Linear(896→128, bias)", "o_proj Linear(896→896, no bias)",
                     "down_proj Linear(4864→896, no bias)", "act_fn SiLU", "input_layernorm: RMSNorm(896)",
                     "    norm: RMSNorm(896)", "  lm_head: Linear(896→151936, no bias)", "tied to model.embed_tokens"):
        assert expected in text, expected


def test_untied_head_adds_its_own_matrix(qwen_config):
    untied = count_parameters(meta_model(replace(qwen_config, tie_word_embeddings=False)))
    assert untied.total == 630_167_424 and not untied.tied_head


def test_cli_config_json(qwen_config, capsys):
    assert main(["inspect", "--config", str(CONFIG_PATH), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"]["total"] == 494_032_768
    assert data["parameters"]["per_layer"] == 14_912_384
    assert data["kv_bytes_per_token"] == 12_288
    assert data["bytes_by_dtype"]["bfloat16"] == 2 * 494_032_768
    assert "layers: 24 x Qwen2DecoderLayer" in "\n".join(data["tree_text"])


def test_cli_config_human(capsys):
    assert main(["inspect", "--config", str(CONFIG_PATH)]) == 0
    out = capsys.readouterr().out
    for expected in ("494,032,768", "14,912,384", "357,897,216", "12,288", "24 x Qwen2DecoderLayer", "tied"):
        assert expected in out, expected


def test_tiny_counts_equal_unique_numel(tiny_loaded):
    model = tiny_loaded.model
    report = count_parameters(model)
    assert report.total == count_unique(model) == sum(p.numel() for p in model.parameters())
    # The tiny model's head is untied: a model that ties it must count the shared matrix once.
    assert not report.tied_head
    config = replace(tiny_loaded.config, tie_word_embeddings=True)
    tied = count_parameters(meta_model(config))
    assert tied.total == report.total - config.vocab_size * config.hidden_size


def test_stored_bytes_match_the_gguf_file(tiny_model, tiny_loaded):
    import gguf

    reader = gguf.GGUFReader(tiny_model.gguf_path)
    in_file: dict[str, int] = {}
    for t in reader.tensors:
        in_file[t.tensor_type.name] = in_file.get(t.tensor_type.name, 0) + int(t.n_bytes)
    stored = {s.name: s.bytes for s in stored_sizes(tiny_loaded.model, tiny_loaded.stored_formats)}
    assert stored == in_file


def test_report_notes_a_separately_stored_head(tiny_loaded):
    report = inspect_model(tiny_loaded.model, tiny_loaded.config, "tiny", tiny_loaded.stored_formats)
    assert any("stores lm_head separately" in note for note in report.notes)
    assert report.loaded_bytes == 4 * report.params.total  # loaded in float32


def test_tensor_summary(tiny_loaded):
    tensor = tiny_loaded.model.state_dict()[Q_PROJ]
    s = summarize_tensor(Q_PROJ, tensor, stored_format="Q5_0")
    assert s.shape == list(tensor.shape) and s.dtype == "float32"
    assert s.min == pytest.approx(tensor.min().item()) and s.max == pytest.approx(tensor.max().item())
    assert s.mean == pytest.approx(tensor.mean().item(), abs=1e-6)
    assert s.std == pytest.approx(tensor.std().item(), rel=1e-4)
    assert torch.allclose(torch.tensor(s.corner), tensor[:3, :3], atol=1e-6)


def test_cli_tensor(tiny_model, capsys):
    assert main(["inspect", "--model", str(tiny_model.hf_dir), "--tensor", Q_PROJ, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == Q_PROJ and data["shape"] == [64, 64] and data["dtype"] == "bfloat16"
    assert main(["inspect", "--model", str(tiny_model.hf_dir), "--tensor", Q_PROJ]) == 0
    out = capsys.readouterr().out
    assert "min" in out and "std" in out and "top-left corner" in out


def test_cli_tensor_unknown_name_suggests(tiny_model, capsys):
    typo = "model.layers.0.self_attn.q_proj.wieght"
    assert main(["inspect", "--model", str(tiny_model.hf_dir), "--tensor", typo]) == 2
    assert Q_PROJ in capsys.readouterr().err


def test_cli_tensor_from_config_has_no_values(capsys):
    assert main(["inspect", "--config", str(CONFIG_PATH), "--tensor", Q_PROJ, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["shape"] == [896, 896] and data["min"] is None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_model(capsys):
    """The default GGUF stores output.weight separately: 630,167,424 parameters, stored in five formats."""
    from lucid.loader import load

    loaded = load(None)
    report = inspect_model(loaded.model, loaded.config, loaded.name, loaded.stored_formats)
    assert report.params.total == count_unique(loaded.model) == 630_167_424
    assert report.params.per_layer == 14_912_384 and not report.params.tied_head
    assert any("separately" in note for note in report.notes)
    assert {s.name: s.tensors for s in report.stored} == {"Q5_0": 133, "Q8_0": 13, "Q6_K": 12, "Q4_K": 12, "F32": 121}
    assert 400_000_000 < report.stored_bytes < 491_400_064  # the file also holds the vocabulary and metadata
    assert report.kv_bytes_per_token == 12_288
