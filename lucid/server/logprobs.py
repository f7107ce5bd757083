"""Engine logprobs in OpenAI's two shapes: chat (`content: [{token, logprob, bytes, top_logprobs}]`) and the legacy
completions one (`tokens`, `token_logprobs`, `top_logprobs` dicts, `text_offset`)."""

from __future__ import annotations

import math
from typing import Any, Protocol

from lucid.engine.outputs import TokenLogprob

# JSON has no -inf: a token with zero probability (e.g. masked by logit_bias) reports this floor, as vLLM does.
LOGPROB_FLOOR = -9999.0


class _ByteTokenizer(Protocol):
    def token_bytes(self, token_id: int) -> list[int]: ...


def _finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else LOGPROB_FLOOR


def chat_logprobs(items: list[TokenLogprob], tokenizer: _ByteTokenizer, top_k: int) -> dict[str, Any]:
    """OpenAI's chat shape. One lucid extension: `"drafted": true` on a token that speculative decoding drafted
    (n-gram lookup) and the verify step kept; absent otherwise, so responses without speculation are unchanged
    (OpenAI clients ignore fields they do not know; the chat page's "See inside" marks these tokens)."""
    content = []
    for item in items:
        entry = {
            "token": item.token,
            "logprob": _finite(item.logprob),
            "bytes": tokenizer.token_bytes(item.token_id),
            "top_logprobs": [
                {"token": alt.token, "logprob": _finite(alt.logprob), "bytes": tokenizer.token_bytes(alt.token_id)}
                for alt in item.top[:top_k]
            ],
        }
        if item.drafted:
            entry["drafted"] = True
        content.append(entry)
    return {"content": content}


def completion_logprobs(items: list[TokenLogprob], top_k: int, text_offset: int) -> dict[str, Any]:
    """Legacy logprobs for `items`, whose first token starts at character `text_offset` of the choice's text.
    Each top_logprobs dict holds the k most likely tokens and always the chosen one (so up to k + 1 entries)."""
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    for item in items:
        tokens.append(item.token)
        token_logprobs.append(_finite(item.logprob))
        top = {alt.token: _finite(alt.logprob) for alt in item.top[:top_k]}
        top.setdefault(item.token, _finite(item.logprob))
        top_logprobs.append(top)
        offsets.append(text_offset)
        text_offset += len(item.token)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": offsets}


def next_offset(logprobs: dict[str, Any], start: int) -> int:
    """Where the token after those in `logprobs` starts (streamed chunks continue each other's offsets)."""
    if not logprobs["tokens"]:
        return start
    return logprobs["text_offset"][-1] + len(logprobs["tokens"][-1])
