"""lucid's tokenizer: byte-level BPE through the `tokenizers` library, plus chat template and streaming decode."""

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders

from lucid.errors import ModelLoadError
from lucid.tokenizer.byte_level import token_string_to_bytes
from lucid.tokenizer.chat_template import render_chat_template
from lucid.tokenizer.detokenizer import IncrementalDetokenizer
from lucid.tokenizer.gguf_vocab import build_backend
from lucid.tokenizer.hf_files import read_hf_folder, write_hf_folder
from lucid.tokenizer.lazy_backend import LazyByteLevelBackend, can_be_lazy
from lucid.tokenizer.sentencepiece import is_sentencepiece, sentencepiece_token_bytes

# Chat models end a turn with <|im_end|>; base models end a document with <|endoftext|>. Either one stops.
_DEFAULT_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


class Tokenizer:
    """Text <-> token ids for one model. Build it with `from_hf_folder` or `from_gguf_fields`."""

    def __init__(
        self,
        backend: BackendTokenizer | LazyByteLevelBackend,
        *,
        bos_token_id: int | None,
        eos_token_id: int | None,
        pad_token_id: int | None,
        chat_template: str | None,
        extra_eos_ids: Sequence[int] = (),
        add_bos_token: bool = False,
        source: str = "",
    ) -> None:
        # Streaming decode and token_bytes read each token's raw bytes from its vocabulary string.
        if isinstance(backend.decoder, decoders.ByteLevel):
            self._token_string_bytes = token_string_to_bytes            # byte stand-ins (GPT-2 style)
        elif is_sentencepiece(backend):
            self._token_string_bytes = sentencepiece_token_bytes        # U+2581 spaces, <0xNN> byte fallback
        else:
            raise ModelLoadError(f"{source}: lucid supports byte-level BPE and SentencePiece (byte-fallback BPE) "
                                 f"tokenizers only")
        self._backend = backend
        self._add_bos_token = add_bos_token
        self.source = source
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.chat_template = chat_template
        self.special_token_ids: set[int] = {i for i, t in backend.get_added_tokens_decoder().items() if t.special}
        stop_candidates = [eos_token_id, *(backend.token_to_id(t) for t in _DEFAULT_STOP_TOKENS), *extra_eos_ids]
        self.eos_token_ids: list[int] = list(dict.fromkeys(i for i in stop_candidates if i is not None))
        self._bytes_cache: dict[int, bytes] = {}
        self._special_tokens_switch = threading.Lock()  # encode_text flips the backend's encode_special_tokens

    # The cluster's front receives the replicas' tokenizer pickled (lucid.cluster): a lock does not travel.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_special_tokens_switch"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._special_tokens_switch = threading.Lock()

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_hf_folder(cls, folder: Path) -> "Tokenizer":
        """Load tokenizer.json, tokenizer_config.json, chat_template.jinja and generation_config.json's eos ids."""
        files = read_hf_folder(Path(folder))
        backend = files.backend

        def token_id(token: str | None) -> int | None:
            return backend.token_to_id(token) if token else None

        return cls(
            backend,
            bos_token_id=token_id(files.bos_token),
            eos_token_id=token_id(files.eos_token),
            pad_token_id=token_id(files.pad_token),
            chat_template=files.chat_template,
            extra_eos_ids=files.generation_eos_ids,
            add_bos_token=files.add_bos_token,
            source=str(folder),
        )

    @classmethod
    def from_gguf_fields(cls, fields: dict[str, Any], source: str, lazy: bool = False) -> "Tokenizer":
        """Build from GGUF metadata (keys -> plain Python values); `source` names the file in error messages.

        `lazy` (byte-level fields only; SentencePiece ones are built now) defers building the BPE to its first use:
        token strings, special and stop ids are read from the fields. `prepare()` builds it; until then errors in
        the vocabulary or merges surface on first use."""
        lazy = lazy and can_be_lazy(fields)
        backend = LazyByteLevelBackend(fields, source) if lazy else build_backend(fields, source)
        return cls(
            backend,
            bos_token_id=fields.get("tokenizer.ggml.bos_token_id"),
            eos_token_id=fields.get("tokenizer.ggml.eos_token_id"),
            pad_token_id=fields.get("tokenizer.ggml.padding_token_id"),
            chat_template=fields.get("tokenizer.chat_template"),
            add_bos_token=bool(fields.get("tokenizer.ggml.add_bos_token", False)),
            source=source,
        )

    def prepare(self) -> None:
        """Build a lazily built backend now (see `from_gguf_fields`), raising ModelLoadError for unusable fields;
        nothing to do for any other tokenizer."""
        if isinstance(self._backend, LazyByteLevelBackend):
            self._backend.prepare()

    def save_hf(self, folder: Path) -> None:
        """Write tokenizer.json + tokenizer_config.json, loadable by transformers' AutoTokenizer and from_hf_folder."""
        write_hf_folder(
            Path(folder),
            self._backend,
            bos_token=self._token_or_none(self.bos_token_id),
            eos_token=self._token_or_none(self.eos_token_id),
            pad_token=self._token_or_none(self.pad_token_id),
            chat_template=self.chat_template,
            add_bos_token=self._add_bos_token,
        )

    # ---- text <-> ids -------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`. Special tokens written in the text (`<|im_start|>`) become their own ids;
        `add_special_tokens` adds what the tokenizer adds around a text (a BOS, for models that want one)."""
        with self._special_tokens_switch:
            return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_text(self, text: str) -> list[int]:
        """Token ids of user content: special-token markers written in it (`<|im_start|>` in a code file) stay
        text, as llama.cpp tokenizes FIM prefixes and suffixes."""
        # The backend's switch is flipped for this one call (a second backend would cost ~0.5 s to build on the
        # first FIM request); the lock keeps a concurrent `encode` from seeing it flipped.
        with self._special_tokens_switch:
            usual = self._backend.encode_special_tokens
            self._backend.encode_special_tokens = True
            try:
                return self._backend.encode(text, add_special_tokens=False).ids
            finally:
                self._backend.encode_special_tokens = usual

    def token_id(self, token: str) -> int | None:
        """The id of a vocabulary entry spelled exactly `token` (e.g. '<|fim_prefix|>'), or None."""
        return self._backend.token_to_id(token)

    @property
    def adds_bos(self) -> bool:
        """Whether the model expects a BOS token in front of a prompt (GGUF tokenizer.ggml.add_bos_token)."""
        return self._add_bos_token

    def encode_prompt(self, text: str) -> list[int]:
        """A plain-text prompt (no chat template) as the model expects it: with the BOS its tokenizer adds (Gemma,
        Llama 2), none for Qwen. Templated text instead goes through `encode`: the template writes its own BOS."""
        return self.encode(text, add_special_tokens=True)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        """The raw vocabulary string (byte stand-ins, e.g. 'Ġhello'), or None for an id the tokenizer lacks."""
        return self._backend.id_to_token(token_id)

    def token_bytes(self, token_id: int) -> list[int]:
        """The token's raw bytes (OpenAI logprobs `bytes`); empty for ids beyond the vocabulary (padded rows)."""
        return list(self._raw_bytes(token_id))

    def token_text(self, token_id: int) -> str:
        """The token as text for display; a token holding part of a character shows U+FFFD for those bytes."""
        return self._raw_bytes(token_id).decode("utf-8", errors="replace")

    def detokenizer(self, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True) -> IncrementalDetokenizer:
        """A fresh streaming decoder for one sequence's generated ids.

        `prompt_ids` is accepted for interface compatibility: byte-level decoding needs no left context.
        """
        return IncrementalDetokenizer(self._raw_bytes, self.special_token_ids if skip_special_tokens else ())

    # ---- chat ---------------------------------------------------------------------------------------------
    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        """The prompt text for a conversation. Raises ValueError (ChatTemplateError) when it cannot be rendered."""
        special = {
            name: text
            for name, token_id in (
                ("bos_token", self.bos_token_id),
                ("eos_token", self.eos_token_id),
                ("pad_token", self.pad_token_id),
            )
            if (text := self._token_or_none(token_id)) is not None
        }
        return render_chat_template(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            special_tokens=special,
            **kwargs,
        )

    # ---- helpers ------------------------------------------------------------------------------------------
    def _token_or_none(self, token_id: int | None) -> str | None:
        return None if token_id is None else self._backend.id_to_token(token_id)

    def _raw_bytes(self, token_id: int) -> bytes:
        cached = self._bytes_cache.get(token_id)
        if cached is None:
            token = self._backend.id_to_token(token_id)
            cached = b"" if token is None else self._token_string_bytes(token)
            self._bytes_cache[token_id] = cached
        return cached

    def __repr__(self) -> str:
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size}, eos_token_ids={self.eos_token_ids})"
