"""SentencePiece-style vocabularies from GGUF metadata (`tokenizer.ggml.model` = "llama": Llama 2, Gemma), built as
a `tokenizers` BPE with byte fallback.

SentencePiece's BPE merges, at each step, the adjacent pair whose merged piece ranks best. A GGUF stores the pieces
(and scores) but no merges, so the merge list is recovered from the vocabulary: every way to cut a piece into two
pieces that are themselves in the vocabulary, ranked by the merged piece. The rank is the piece's score, except for
Gemma, whose scores do not follow its merge order while the order of the pieces in the file does.

Text is spelled with U+2581 ("▁") for spaces; bytes outside the vocabulary fall back to the <0xNN> tokens.
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, decoders, models, normalizers, processors
from tokenizers import Tokenizer as BackendTokenizer

from lucid.errors import ModelLoadError

SPACE = "\u2581"
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
TOKEN_TYPE_BYTE = 6


def recovered_merges(tokens: list[str], rank: dict[str, float]) -> list[tuple[str, str]]:
    """The merges a SentencePiece vocabulary implies, best first: for each piece (best-ranked first), its cuts into
    two known pieces, longer left parts first, then longer right parts, then by the parts' ids."""
    ids = {tok: i for i, tok in enumerate(tokens)}
    candidates: list[tuple[float, int, int, int, int, str, str]] = []
    for piece in tokens:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                # Sorted ascending on negated keys = best rank, longest left, longest right, then smallest ids.
                candidates.append((-rank[piece], -len(left), -len(right), ids[left], ids[right], left, right))
    candidates.sort()
    return [(left, right) for *_, left, right in candidates]


def _respell_spaces(token: str) -> str:
    # Gemma files store the pieces made only of spaces with real spaces; the model spells spaces as U+2581.
    return SPACE * len(token) if token and not token.strip(" ") else token


def build_sentencepiece_backend(fields: dict[str, Any], architecture: str | None, source: str) -> BackendTokenizer:
    """A byte-fallback BPE equivalent to the SentencePiece model the GGUF describes; ids are the GGUF's indices."""
    tokens: list[str] = list(fields.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise ModelLoadError(f"{source}: no tokenizer.ggml.tokens")
    gemma = (architecture or "").startswith("gemma")
    if gemma:
        tokens = [_respell_spaces(t) for t in tokens]
        rank = {tok: -float(i) for i, tok in enumerate(tokens)}          # earlier in the file = merged first
    else:
        scores = list(fields.get("tokenizer.ggml.scores") or [])
        if len(scores) != len(tokens):
            raise ModelLoadError(f"{source}: tokenizer.ggml.scores does not match tokenizer.ggml.tokens")
        rank = {tok: float(s) for tok, s in zip(tokens, scores)}
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ModelLoadError(f"{source}: tokenizer.ggml.tokens holds duplicate strings")
    unk_id = fields.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None else None
    backend = BackendTokenizer(models.BPE(vocab=vocab, merges=recovered_merges(tokens, rank), unk_token=unk,
                                          fuse_unk=True, byte_fallback=True))
    prefix = bool(fields.get("tokenizer.ggml.add_space_prefix", not gemma))
    steps = ([normalizers.Prepend(SPACE)] if prefix else []) + [normalizers.Replace(" ", SPACE)]
    backend.normalizer = normalizers.Sequence(steps)
    backend.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
                                        + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    token_types = list(fields.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, kind in zip(tokens, token_types) if kind == TOKEN_TYPE_CONTROL])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, kind in zip(tokens, token_types) if kind == TOKEN_TYPE_USER_DEFINED])
    bos_id = fields.get("tokenizer.ggml.bos_token_id")
    if fields.get("tokenizer.ggml.add_bos_token", True) and bos_id is not None:
        bos = tokens[bos_id]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)])
    return backend


def sentencepiece_token_bytes(token: str) -> bytes:
    """A piece's raw bytes: <0xNN> is that byte, U+2581 a space, anything else its UTF-8."""
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return bytes([int(token[3:5], 16)])
        except ValueError:
            pass
    return token.replace(SPACE, " ").encode("utf-8")


def is_sentencepiece(backend: BackendTokenizer) -> bool:
    """Whether `backend` is a byte-fallback BPE spelled with U+2581 (built here, or an HF Llama/Gemma tokenizer)."""
    model = backend.model
    return isinstance(model, models.BPE) and bool(model.byte_fallback)
