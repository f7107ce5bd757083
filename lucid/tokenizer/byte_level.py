"""The byte <-> character table of byte-level BPE (GPT-2 style, used by Qwen2).

Byte-level BPE stores every token as a string of printable stand-in characters, one per byte, so that the
vocabulary never holds whitespace or control characters. Reading a token's real bytes means reversing that map.
"""

from functools import cache


@cache
def byte_to_char() -> dict[int, str]:
    """Each byte value 0..255 -> the character that stands for it inside vocabulary strings."""
    # Printable Latin-1 bytes stand for themselves; the others (controls, space, soft hyphen...) are moved, in
    # byte order, to code points 256, 257, ... so that every stand-in is a visible character.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    moved = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + moved)
            moved += 1
    return table


@cache
def char_to_byte() -> dict[str, int]:
    """The reverse of `byte_to_char`."""
    return {c: b for b, c in byte_to_char().items()}


def token_string_to_bytes(token: str) -> bytes:
    """The raw bytes a byte-level vocabulary string stands for.

    Characters outside the table (they occur in added tokens only) pass through as their own UTF-8, which is
    what the `tokenizers` ByteLevel decoder does too, so this agrees with `Tokenizer.decode`.
    """
    table = char_to_byte()
    out = bytearray()
    for ch in token:
        b = table.get(ch)
        if b is None:
            out += ch.encode("utf-8")
        else:
            out.append(b)
    return bytes(out)
