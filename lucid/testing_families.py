"""Tiny random models of every family, built with transformers' own classes (the reference), for tests.

    make_tiny_family("gemma3", out_dir) -> TinyFamilyModel: the transformers model (fp32, eval) and where it was
    written: an HF folder (config.json, model.safetensors, lucid.testing's tokenizer) and a GGUF with the same
    weights in F32, laid out as llama.cpp's converter writes that family (Llama's q/k rows paired, Gemma's 1 + w).

The weights are drawn so that attention is far from uniform and the logits spread out (position, cache and window
bugs then change the output). Needs transformers (a test dependency), never imported by lucid itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lucid.testing import CHAT_TEMPLATE, SPECIAL_TOKENS, VOCAB_MULTIPLE, build_tokenizer

FAMILIES = ("qwen2", "qwen3", "llama", "gemma3")
SLIDING_WINDOW = 8  # Gemma 3's tiny window: test prompts run well past it


@dataclass
class TinyFamilyModel:
    family: str
    reference: Any              # the transformers model, fp32, eval mode
    hf_dir: Path
    gguf_path: Path


def _hf_config(family: str, vocab: int, ids: dict[str, int], rope_scaling: bool) -> Any:
    import transformers

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6,
                  bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=None)
    if family == "qwen2":
        return transformers.Qwen2Config(**common, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                                        tie_word_embeddings=False)
    if family == "qwen3":  # head_dim 32, not hidden / heads = 16
        return transformers.Qwen3Config(**common, head_dim=32, tie_word_embeddings=False,
                                        rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    if family == "llama":  # Llama 3's rope scaling (with a short original context so it matters) and a tied head
        rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        if not rope_scaling:  # the plain Llama layer, which the fused C++ step runs
            rope = {"rope_type": "default", "rope_theta": 10000.0}
        return transformers.LlamaConfig(**common, rope_parameters=rope, tie_word_embeddings=True)
    if family == "gemma3":
        layer_types = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
        rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1e6}}
        return transformers.Gemma3TextConfig(**common, head_dim=32, query_pre_attn_scalar=24,
                                             sliding_window=SLIDING_WINDOW, layer_types=layer_types,
                                             rope_parameters=rope, tie_word_embeddings=True)
    raise ValueError(f"unknown family {family!r}")


def _hf_model(family: str, config: Any) -> Any:
    import transformers

    cls = {"qwen2": transformers.Qwen2ForCausalLM, "qwen3": transformers.Qwen3ForCausalLM,
           "llama": transformers.LlamaForCausalLM, "gemma3": transformers.Gemma3ForCausalLM}[family]
    config._attn_implementation = "eager"
    return cls(config)


def _randomize(model: Any, family: str, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)

    def normal(shape: torch.Size, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):   # Gemma's norms scale by 1 + w, the others by w
                p.copy_(normal(p.shape, 0.1) + (0.0 if family == "gemma3" else 1.0))
            elif "q_proj" in name or "k_proj" in name:
                p.copy_(normal(p.shape, 0.15))
            elif name in ("lm_head.weight", "model.embed_tokens.weight"):
                p.copy_(normal(p.shape, 0.3 if family != "gemma3" else 0.1))
            else:
                p.copy_(normal(p.shape, 0.02 if p.ndim > 1 else 0.1))


def _write_tokenizer(folder: Path, tok: Any, ids: dict[str, int]) -> None:
    tok.save(str(folder / "tokenizer.json"))
    added = {str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True} for t in SPECIAL_TOKENS}
    tokenizer_config = {"add_bos_token": False, "added_tokens_decoder": added, "bos_token": "<|endoftext|>",
                        "chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                        "tokenizer_class": "PreTrainedTokenizerFast"}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


def _write_gguf(path: Path, family: str, reference: Any, lucid_config: Any, tok: Any, ids: dict[str, int]) -> None:
    from lucid.loader.names import hf_to_gguf
    from lucid.models.registry import family_of
    from lucid.testing import finish_gguf, gguf_writer

    fam = family_of(lucid_config)
    arch = fam.gguf_architecture
    c = lucid_config
    w = gguf_writer(path, arch, f"Tiny {family}", c, tok, ids)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    if c.sliding_window:
        w.add_sliding_window(c.sliding_window)
    state = reference.state_dict()
    for name, tensor in state.items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        stored = fam.hf_to_gguf_tensor(name, tensor.detach().float(), c)
        w.add_tensor(hf_to_gguf(name, arch), stored.numpy().astype(np.float32))
    finish_gguf(w)


def make_tiny_family(family: str, out_dir: Path, seed: int = 0, rope_scaling: bool = True) -> TinyFamilyModel:
    """A tiny random `family` model from transformers, written as an HF folder and as a GGUF (see module doc)."""
    from lucid.config import ModelConfig

    out_dir = Path(out_dir)
    tok = build_tokenizer()
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    vocab = -(-tok.get_vocab_size(with_added_tokens=True) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    reference = _hf_model(family, _hf_config(family, vocab, ids, rope_scaling))
    _randomize(reference, family, seed)
    reference.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_dir = out_dir / f"{family}-hf"
    reference.save_pretrained(hf_dir)
    _write_tokenizer(hf_dir, tok, ids)
    gguf_path = out_dir / f"tiny-{family}.gguf"
    lucid_config = ModelConfig.from_json(hf_dir / "config.json")
    # The Gemma 3 GGUF states no layer pattern (llama.cpp fixes it at 6): the tiny model uses 2, so only the HF
    # folder carries Gemma's exact layer types; its GGUF is written for the name and layout maps alone.
    _write_gguf(gguf_path, family, reference, lucid_config, tok, ids)
    return TinyFamilyModel(family, reference, hf_dir, gguf_path)
