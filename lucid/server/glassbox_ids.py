"""The token ids behind what the chat page holds: the conversation (rendered through the chat template, as the chat
endpoint does) and the answer's tokens as the `bytes` its logprobs carry. Byte-level BPE gives every vocabulary
token its own byte string, so bytes name an id exactly where the text of a token (half a UTF-8 character) cannot."""

from __future__ import annotations

import asyncio
from typing import Any

from lucid.server.errors import bad_request

_maps: dict[int, dict[bytes, int]] = {}   # id(tokenizer) -> bytes -> token id, built once per tokenizer


def _bytes_to_id(tokenizer: Any) -> dict[bytes, int]:
    table = _maps.get(id(tokenizer))
    if table is None:
        table = {}
        for token_id in range(tokenizer.vocab_size):
            table.setdefault(bytes(tokenizer.token_bytes(token_id)), token_id)  # the first id wins a tie
        _maps[id(tokenizer)] = table
    return table


async def ids_from_bytes(tokenizer: Any, tokens: list[list[int]], param: str) -> list[int]:
    table = _maps.get(id(tokenizer)) or await asyncio.to_thread(_bytes_to_id, tokenizer)
    ids = []
    for i, raw in enumerate(tokens):
        token_id = table.get(bytes(raw)) if all(0 <= b < 256 for b in raw) else None
        if token_id is None:
            raise bad_request(f"{param}[{i}]: these bytes are not a token of this model's vocabulary", param=param)
        ids.append(token_id)
    return ids
