"""Fill-in-the-middle prompts: the model's FIM tokens (found in its vocabulary), file- and repo-level layouts, and
the trimming llama.cpp's server applies to long prefixes and suffixes. Token ids in, token ids out; no HTTP here.

File level (Qwen2.5-Coder's README, OpenAI's `suffix`, Ollama's `suffix`):
    <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>
Repo level (what llama.cpp's /infill sends, so that editors get the same prompt from lucid as from llama-server):
    <|repo_name|>myproject\\n<|file_sep|>{filename}\\n{text} ... <|file_sep|>filename\\n
    <|fim_prefix|>{prefix}{prompt}<|fim_suffix|>{suffix}<|fim_middle|>
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lucid.server.errors import bad_request

if TYPE_CHECKING:
    from lucid.tokenizer import Tokenizer

# Spellings of each FIM marker: Qwen2.5-Coder's first, then StarCoder's (same roles, other models).
_SPELLINGS = {
    "prefix": ("<|fim_prefix|>", "<fim_prefix>"),
    "suffix": ("<|fim_suffix|>", "<fim_suffix>"),
    "middle": ("<|fim_middle|>", "<fim_middle>"),
    "pad": ("<|fim_pad|>", "<fim_pad>"),
    "repo_name": ("<|repo_name|>", "<reponame>", "<repo_name>"),
    "file_sep": ("<|file_sep|>", "<file_sep>"),
}

# llama.cpp's server has no inputs for these yet and writes the same placeholders; lucid does too, so an editor
# gets the very prompt it would get from llama-server (and both servers' prefix caches see the same tokens).
REPO_NAME = "myproject"
CURRENT_FILE = "filename"
EXTRA_FILE = "tmp"          # the file name of an input_extra chunk that gives none
FIM_BATCH = 2048            # llama.cpp's default n_batch, which sizes the prefix (3/4) and suffix (1/4) kept


@dataclass(frozen=True)
class FimTokens:
    """A model's FIM token ids. prefix/suffix/middle are required for FIM; the others are optional."""

    prefix: int
    suffix: int
    middle: int
    pad: int | None = None
    repo_name: int | None = None
    file_sep: int | None = None

    @classmethod
    def find(cls, tokenizer: Tokenizer) -> FimTokens | None:
        """The FIM tokens of `tokenizer`'s vocabulary (special tokens only), or None if it lacks the three needed."""
        found: dict[str, int | None] = {}
        for role, spellings in _SPELLINGS.items():
            found[role] = next((i for s in spellings
                                if (i := tokenizer.token_id(s)) is not None and i in tokenizer.special_token_ids),
                               None)
        if found["prefix"] is None or found["suffix"] is None or found["middle"] is None:
            return None
        return cls(**found)  # type: ignore[arg-type]

    @property
    def ids(self) -> list[int]:
        return [i for i in (self.prefix, self.suffix, self.middle, self.pad, self.repo_name, self.file_sep)
                if i is not None]


def no_fim_message(tokenizer: Tokenizer) -> str:
    return (f"This model has no fill-in-the-middle tokens ({', '.join(s[0] for s in list(_SPELLINGS.values())[:3])} "
            f"are not in the vocabulary of {tokenizer.source or 'its tokenizer'}), so it cannot complete between a "
            "prefix and a suffix; send the text without a suffix, or serve a FIM model such as Qwen2.5-Coder.")


def fim_stop_ids(tokenizer: Tokenizer, prompt_ids: Sequence[int]) -> list[int]:
    """Token ids that end a completion of a FIM prompt: every FIM marker (a model done with the middle goes on to
    the next file or pads). Empty for a prompt that is not FIM (no <|fim_middle|> in it)."""
    tokens = FimTokens.find(tokenizer)
    if tokens is None or tokens.middle not in prompt_ids:
        return []
    return tokens.ids


def fim_cache_reuse(tokenizer: Tokenizer, prompt_ids: Sequence[int], setting: int) -> int:
    """`SamplingParams.cache_reuse` for a prompt: the server's `--cache-reuse` for a FIM prompt (an editor's typing
    session moves the suffix at every keystroke; engine/kv_reuse.py), 0 (exact prefix caching only) for any other."""
    return setting if fim_stop_ids(tokenizer, prompt_ids) else 0


@dataclass(frozen=True)
class ExtraChunk:
    """One piece of context from another file (llama.cpp's input_extra item)."""

    text: str
    filename: str = EXTRA_FILE


@dataclass
class FimPrompt:
    token_ids: list[int]
    truncated: bool        # the prefix, the suffix or the extra context was cut to fit


def render_file_level(tokenizer: Tokenizer, tokens: FimTokens, prefix: str, suffix: str) -> list[int]:
    """<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>; the texts are user content, so a FIM marker
    written in them is text, not a control token."""
    return [tokens.prefix, *tokenizer.encode_text(prefix), tokens.suffix, *tokenizer.encode_text(suffix),
            tokens.middle]


def render_infill(tokenizer: Tokenizer, tokens: FimTokens, prefix: str, suffix: str, prompt: str = "",
                  extra: Sequence[ExtraChunk] = (), *, n_ctx: int, n_predict: int,
                  n_batch: int = FIM_BATCH) -> FimPrompt:
    """llama.cpp's /infill prompt: repo-level context first, then the FIM part, each trimmed as llama.cpp does.

    The prefix keeps its last 3/4 * n_batch tokens and the suffix its first n_batch/4 - 2 - len(prompt) tokens (the
    text nearest the cursor matters most); the extra context fills what the context has left after n_batch and
    twice n_predict, keeping its end (the most recent chunks)."""
    prefix_ids = tokenizer.encode_text(prefix)
    suffix_ids = tokenizer.encode_text(suffix)
    prompt_ids = tokenizer.encode_text(prompt)
    extra_ids = _repo_context(tokenizer, tokens, extra)

    prefix_take = min(len(prefix_ids), 3 * (n_batch // 4))
    suffix_take = min(len(suffix_ids), max(0, n_batch // 4 - (2 + len(prompt_ids))))
    extra_take = min(max(0, n_ctx - n_batch - 2 * max(n_predict, 0)), len(extra_ids))
    truncated = prefix_take < len(prefix_ids) or suffix_take < len(suffix_ids) or extra_take < len(extra_ids)

    bos = [tokenizer.bos_token_id] if tokenizer.adds_bos and tokenizer.bos_token_id is not None else []
    ids = [*extra_ids[len(extra_ids) - extra_take:], *bos, tokens.prefix, *prefix_ids[len(prefix_ids) - prefix_take:],
           *prompt_ids, tokens.suffix, *suffix_ids[:suffix_take], tokens.middle]
    return FimPrompt(ids, truncated)


def _repo_context(tokenizer: Tokenizer, tokens: FimTokens, extra: Sequence[ExtraChunk]) -> list[int]:
    """<|repo_name|>myproject\\n, each chunk as <|file_sep|>{filename}\\n{text}, then <|file_sep|> for the current
    file. A model without the repo tokens gets the chunks behind a plain-text separator, as llama.cpp does."""
    ids: list[int] = []
    if tokens.repo_name is not None:
        ids += [tokens.repo_name, *tokenizer.encode_text(f"{REPO_NAME}\n")]
    for chunk in extra:
        if tokens.file_sep is not None:
            ids += [tokens.file_sep, *tokenizer.encode_text(f"{chunk.filename}\n")]
        else:
            ids += tokenizer.encode_text("\n\n--- snippet ---\n\n")
        ids += tokenizer.encode_text(chunk.text)
    if tokens.file_sep is not None:
        ids += [tokens.file_sep, *tokenizer.encode_text(f"{CURRENT_FILE}\n")]
    return ids


def suffix_prompts(tokenizer: Tokenizer, prompt: str | list, suffix: str) -> list[list[int]]:
    """/v1/completions with `suffix`: each text prompt as a file-level FIM prompt (the text before the insertion
    point), so OpenAI's insert mode works with a FIM model. 400 for token-id prompts or a model without FIM."""
    tokens = FimTokens.find(tokenizer)
    if tokens is None:
        raise bad_request(no_fim_message(tokenizer), param="suffix")
    texts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise bad_request("'suffix' needs the prompt as text (a string or a list of strings), not token ids.",
                          param="prompt")
    return [render_file_level(tokenizer, tokens, text, suffix) for text in texts]
