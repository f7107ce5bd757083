"""Build a `tokenizers.Tokenizer` from the tokenizer fields of a GGUF file: byte-level BPE (`gpt2` model, with the
pre-tokenizer `tokenizer.ggml.pre` names) or SentencePiece (`llama` model: lucid.tokenizer.sentencepiece)."""

from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as BackendTokenizer

from lucid.errors import ModelLoadError
from lucid.tokenizer.sentencepiece import build_sentencepiece_backend

# How the Qwen2 tokenizer splits text into words before BPE: contractions, letter runs (with one leading
# non-letter), single digits (so numbers are tokenized digit by digit), punctuation runs, newlines, other spaces.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Llama 3's split: Qwen2's, but numbers in runs of up to three digits.
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# GGUF token types (llama.cpp's enum): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4


def pre_tokenizer_for(pre: str, source: str) -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer for a GGUF `tokenizer.ggml.pre` value."""
    split = {"qwen2": QWEN2_SPLIT_PATTERN, "llama-bpe": LLAMA3_SPLIT_PATTERN, "llama3": LLAMA3_SPLIT_PATTERN}.get(pre)
    if split is not None:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
            ]
        )
    if pre == "smollm":
        # SmolLM's tokenizer.json: every digit alone, then GPT-2's split.
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True),
        ])
    if pre in ("default", "gpt2", "gpt-2"):
        # The ByteLevel pre-tokenizer's own regex is GPT-2's split pattern.
        return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)
    raise ModelLoadError(f"{source}: unsupported tokenizer.ggml.pre {pre!r}; lucid supports 'qwen2', 'llama-bpe', "
                         f"'smollm' and 'default'")


def _split_merges(merges: list[str], source: str) -> list[tuple[str, str]]:
    """'Ġ t' -> ('Ġ', 't'). Byte-level vocabulary strings never contain a real space (it is written as 'Ġ'), so one
    space separates; split in one pass (a call per merge cost ~0.1 s of every start-up for 151k merges)."""
    pairs = [tuple(merge.split(" ")) for merge in merges]
    if not all(map(all, pairs)) or (pairs and set(map(len, pairs)) != {2}):  # C-level passes; slow path on error
        malformed = next(m for m, pair in zip(merges, pairs, strict=True) if len(pair) != 2 or not all(pair))
        raise ModelLoadError(f"{source}: malformed merge {malformed!r} in tokenizer.ggml.merges")
    return pairs  # type: ignore[return-value]  (every pair has two parts, checked above)


def build_backend(fields: dict[str, Any], source: str) -> BackendTokenizer:
    """A tokenizer equivalent to the one the GGUF describes; ids are the GGUF's token indices."""
    model_type = fields.get("tokenizer.ggml.model")
    if model_type == "llama":
        return build_sentencepiece_backend(fields, fields.get("general.architecture"), source)
    if model_type != "gpt2":
        raise ModelLoadError(f"{source}: tokenizer.ggml.model is {model_type!r}; lucid supports byte-level BPE "
                             f"('gpt2') and SentencePiece ('llama')")
    tokens: list[str] = list(fields.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise ModelLoadError(f"{source}: no tokenizer.ggml.tokens")
    merges = _split_merges(list(fields.get("tokenizer.ggml.merges") or []), source)
    token_types: list[int] = list(fields.get("tokenizer.ggml.token_type") or [1] * len(tokens))

    # Every token, control ones included, goes into the BPE vocabulary so that its id is its index; adding the
    # control tokens afterwards reuses those ids instead of appending new ones.
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ModelLoadError(f"{source}: tokenizer.ggml.tokens holds duplicate strings")
    backend = BackendTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    pre = fields.get("tokenizer.ggml.pre", "default")
    if pre == "qwen2":
        backend.normalizer = normalizers.NFC()  # Qwen2's own tokenizer.json normalizes to NFC
    backend.pre_tokenizer = pre_tokenizer_for(pre, source)
    backend.decoder = decoders.ByteLevel()

    # Control tokens (<|im_start|>, <|endoftext|>) are special: decode(skip_special_tokens=True) drops them.
    # User-defined ones (Qwen's <tool_call>) are matched whole in text but kept when decoding, as HF does.
    added = [
        AddedToken(tok, special=(kind == TOKEN_TYPE_CONTROL), normalized=False)
        for tok, kind in zip(tokens, token_types, strict=False)  # a short token_type list marks the rest normal
        if kind in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
    ]
    backend.add_special_tokens([t for t in added if t.special])
    backend.add_tokens([t for t in added if not t.special])

    bos_id = fields.get("tokenizer.ggml.bos_token_id")
    if fields.get("tokenizer.ggml.add_bos_token") and bos_id is not None:
        bos = tokens[bos_id]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)]
        )
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)

    for tok in added:
        if backend.token_to_id(tok.content) != vocab[tok.content]:
            raise ModelLoadError(f"{source}: added token {tok.content!r} did not keep its GGUF id")
    return backend
