"""`lucid convert`: a GGUF file -> a Hugging Face folder that transformers (and lucid) can load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from lucid.errors import ModelLoadError
from lucid.loader.read import read_checkpoint


def convert_gguf_to_hf(gguf_path: str | Path | None, out_dir: str | Path) -> Path:
    """Write bf16 model.safetensors, config.json, generation_config.json and the tokenizer files into out_dir.

    `gguf_path` None or "default" converts the default model. Quantized tensors are dequantized (and so the
    folder is ~2 bytes per parameter).
    """
    from safetensors.torch import save_file

    checkpoint = read_checkpoint(gguf_path, torch.bfloat16)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tensors = {name: checkpoint.tensors[name].contiguous() for name in checkpoint.tensors
                   if not (name == "lm_head.weight" and checkpoint.config.tie_word_embeddings)}
        # transformers refuses safetensors files without a "format" entry in their metadata.
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        config = dataclasses.replace(checkpoint.config, torch_dtype="bfloat16")
        (out / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")
        generation = dict(checkpoint.generation_config)
        for key in ("bos_token_id", "eos_token_id"):
            if getattr(config, key) is not None:
                generation.setdefault(key, getattr(config, key))
        (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        checkpoint.tokenizer.save_hf(out)
    except OSError as exc:
        raise ModelLoadError(f"{out}: cannot write the converted model ({exc.strerror or exc}).") from None
    return out
