"""Incremental detokenization: text out as tokens come in, never half a character."""

import codecs
from collections.abc import Callable, Collection


class IncrementalDetokenizer:
    """Turns a stream of token ids into text pieces whose concatenation equals `Tokenizer.decode(all ids)`.

    Byte-level BPE splits one character (Chinese, emoji) over several tokens, so a token may end inside a UTF-8
    sequence. Each token's bytes go through an incremental UTF-8 decoder, which holds back an incomplete tail
    until the next bytes complete it: O(1) work per token, no re-decoding of earlier text. Invalid bytes become
    U+FFFD, exactly as the full decode would make them.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], skip_ids: Collection[int] = ()) -> None:
        self._token_bytes = token_bytes
        self._skip_ids = skip_ids
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        """The text this token completes (may be empty while a character is still incomplete)."""
        if token_id in self._skip_ids:
            return ""
        return self._utf8.decode(self._token_bytes(token_id))

    def flush(self) -> str:
        """Whatever is left at the end: an incomplete trailing character comes out as U+FFFD, as in decode()."""
        return self._utf8.decode(b"", final=True)
