"""Read and write the tokenizer files of a Hugging Face model folder."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as BackendTokenizer

from lucid.errors import ModelLoadError


@dataclass
class HFTokenizerFiles:
    """What a folder says about its tokenizer beyond tokenizer.json."""

    backend: BackendTokenizer
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    chat_template: str | None = None
    generation_eos_ids: list[int] = field(default_factory=list)
    add_bos_token: bool = False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: cannot read JSON: {e}") from e


def _token_content(value: Any) -> str | None:
    # tokenizer_config.json writes special tokens either as a string or as a serialized AddedToken dict.
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(config: dict[str, Any], folder: Path) -> str | None:
    # Newer transformers versions keep the template in its own file, which then takes precedence.
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, {"name": "tool_use"...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        return named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


def _as_id_list(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []


def read_hf_folder(folder: Path) -> HFTokenizerFiles:
    """tokenizer.json (required), tokenizer_config.json, chat_template.jinja and generation_config.json if present."""
    folder = Path(folder)
    tokenizer_json = folder / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise ModelLoadError(f"{folder}: no tokenizer.json (lucid reads the fast-tokenizer file)")
    try:
        backend = BackendTokenizer.from_file(str(tokenizer_json))
    except Exception as e:  # the library raises plain Exceptions for malformed files
        raise ModelLoadError(f"{tokenizer_json}: cannot load: {e}") from e

    config_path = folder / "tokenizer_config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    generation_path = folder / "generation_config.json"
    generation = _read_json(generation_path) if generation_path.is_file() else {}
    return HFTokenizerFiles(
        backend=backend,
        bos_token=_token_content(config.get("bos_token")),
        eos_token=_token_content(config.get("eos_token")),
        pad_token=_token_content(config.get("pad_token")),
        chat_template=_chat_template(config, folder),
        generation_eos_ids=_as_id_list(generation.get("eos_token_id")),
        add_bos_token=config.get("add_bos_token") is True,
    )


def write_hf_folder(
    folder: Path,
    backend: BackendTokenizer,
    *,
    bos_token: str | None,
    eos_token: str | None,
    pad_token: str | None,
    chat_template: str | None,
    add_bos_token: bool,
) -> None:
    """Write tokenizer.json + tokenizer_config.json so that transformers' AutoTokenizer loads the same tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backend.save(str(folder / "tokenizer.json"))
    added = {
        str(i): {
            "content": tok.content,
            "lstrip": tok.lstrip,
            "rstrip": tok.rstrip,
            "normalized": tok.normalized,
            "single_word": tok.single_word,
            "special": tok.special,
        }
        for i, tok in sorted(backend.get_added_tokens_decoder().items())
    }
    config: dict[str, Any] = {
        # The generic fast tokenizer loads tokenizer.json as it is, with no model-specific rebuilding.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": bos_token,
        "eos_token": eos_token,
        "pad_token": pad_token,
        "unk_token": None,
        "add_bos_token": add_bos_token,
        "add_eos_token": False,
        # HF's default clean-up would rewrite " ," to "," when decoding; Qwen's tokenizer turns it off.
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
    }
    if chat_template:
        config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
