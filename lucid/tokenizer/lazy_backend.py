"""A stand-in for the `tokenizers` backend of a byte-level (GGUF `gpt2`) tokenizer that builds the real one only
when something needs it.

Building Qwen2's BPE (151,936 tokens, 151,387 merges) costs ~0.25 s of one core with the GIL held. The engine only
reads each token's vocabulary string, the control ids and the stop ids, which the GGUF fields give directly; it
encodes text only for structured output. The stand-in answers those lookups from the fields and builds the real
backend (`build_backend`) on first use of anything else, once, then hands every call to it.
"""

from __future__ import annotations

import threading
from typing import Any

from tokenizers import AddedToken, decoders
from tokenizers import Tokenizer as BackendTokenizer

from lucid.errors import ModelLoadError
from lucid.tokenizer.gguf_vocab import TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED, build_backend


def can_be_lazy(fields: dict[str, Any]) -> bool:
    """Byte-level GGUF fields with a vocabulary: the lookups the stand-in answers mean what they say."""
    return fields.get("tokenizer.ggml.model") == "gpt2" and bool(fields.get("tokenizer.ggml.tokens"))


class LazyByteLevelBackend:
    """Answers id_to_token, token_to_id, get_vocab_size, get_added_tokens_decoder and decoder from the GGUF fields;
    any other attribute (encode, decode, to_str, encode_special_tokens ...) builds the real backend first."""

    def __init__(self, fields: dict[str, Any], source: str) -> None:
        if not can_be_lazy(fields):
            raise ValueError(f"{source}: only byte-level GGUF tokenizer fields with tokens can be built lazily")
        self._fields = fields                          # emptied once built: the merges are only for building
        self._source = source
        self._built: BackendTokenizer | None = None
        self._error: str | None = None                 # a failed build fails again without redoing the work
        self._lock = threading.Lock()
        self._tokens: list[str] = list(fields["tokenizer.ggml.tokens"])
        self._ids: dict[str, int] | None = None       # token -> id, made on the first lookup of a non-added token
        # What build_backend adds: control tokens as special, user-defined ones as plain added tokens.
        types = fields.get("tokenizer.ggml.token_type") or []
        added_ids = [i for i, kind in enumerate(types[:len(self._tokens)])  # a short list marks the rest normal
                     if kind in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)]
        self._added = {i: AddedToken(self._tokens[i], special=(types[i] == TOKEN_TYPE_CONTROL), normalized=False)
                       for i in added_ids}
        self._decoder = decoders.ByteLevel()

    # ---- building ----------------------------------------------------------------------------------------
    @property
    def is_built(self) -> bool:
        return self._built is not None

    def prepare(self) -> BackendTokenizer:
        """The real backend, built now if it is not yet (once, whichever thread asks first)."""
        built = self._built
        if built is not None:
            return built
        with self._lock:
            if self._built is None:
                self._built = self._build()
                self._fields = {}
            return self._built

    def _build(self) -> BackendTokenizer:
        if self._error is not None:
            raise ModelLoadError(self._error)
        try:
            return build_backend(self._fields, self._source)
        except ModelLoadError as exc:
            self._error = str(exc)
            raise
        except Exception as exc:  # noqa: BLE001 (the tokenizers library raises bare Exception on bad vocab/merges)
            self._error = f"{self._source}: the tokenizer in the metadata cannot be built: {exc}"
            raise ModelLoadError(self._error) from None

    # ---- answered from the fields until built ------------------------------------------------------------
    def id_to_token(self, token_id: int) -> str | None:
        built = self._built
        if built is not None:
            return built.id_to_token(token_id)
        if token_id < 0:  # the backend's id is unsigned
            raise OverflowError("can't convert negative int to unsigned")
        return self._tokens[token_id] if token_id < len(self._tokens) else None

    def token_to_id(self, token: str) -> int | None:
        built = self._built
        if built is not None:
            return built.token_to_id(token)
        for token_id, added in self._added.items():  # the stop tokens looked up at start-up are added tokens
            if added.content == token:
                return token_id
        if self._ids is None:
            ids: dict[str, int] = {}
            for token_id, text in enumerate(self._tokens):
                ids.setdefault(text, token_id)
            self._ids = ids
        return self._ids.get(token)

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        built = self._built
        if built is not None:
            return built.get_vocab_size(with_added_tokens=with_added_tokens)
        return len(self._tokens)  # the added tokens reuse their vocabulary ids, so both counts agree

    def get_added_tokens_decoder(self) -> dict[int, AddedToken]:
        built = self._built
        return built.get_added_tokens_decoder() if built is not None else dict(self._added)

    @property
    def decoder(self) -> Any:  # a tokenizers.decoders.Decoder
        built = self._built
        return built.decoder if built is not None else self._decoder

    # ---- everything else: the real backend ---------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # own state not set (yet): unpickling, or a typo; never build for it
            raise AttributeError(name)
        return getattr(self.prepare(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:  # backend.encode_special_tokens = True must switch the real backend
            setattr(self.prepare(), name, value)

    # The cluster pickles the Tokenizer: a lock does not travel; a built backend travels instead of the fields.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        if state["_built"] is not None:
            state.update(_tokens=[], _ids=None, _added={})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LazyByteLevelBackend(source={self._source!r}, built={self.is_built})"
