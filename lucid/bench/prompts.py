"""Synthetic prompts of a chosen length in tokens, different from each other so no prefix cache can help.

The client has no tokenizer of its own; it asks the server's (vLLM/lucid `POST /tokenize`, llama-cpp-python
`POST /extras/tokenize`) and adjusts the number of words until the prompt has the wanted length. A server with
neither gets a word count from a rule of thumb; the prompt lengths actually used are in the streamed usage.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

WORDS = (
    "time year people way day man thing woman life child world school state family student group country problem "
    "hand part place case week company system program question work government number night point home water room "
    "mother area money story fact month lot right study book eye job word business issue side kind head house "
    "service friend father power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war history party result "
    "change morning reason research girl guy moment air teacher force education river garden music window paper"
).split()
TOKENS_PER_WORD_GUESS = 1.3
MAX_TRIES = 16

Tokenize = Callable[[str], Awaitable[int | None]]


@dataclass
class BenchRequest:
    """One request to send: its prompt text and how many tokens to generate."""

    prompt: str
    output_len: int
    prompt_len: int | None = None    # tokens by the server's tokenizer, when it could tell


def _text(rng: random.Random, n_words: int, index: int) -> str:
    words = [rng.choice(WORDS) for _ in range(max(n_words, 1))]
    return f"{index}: " + " ".join(words)


async def server_tokenizer(client: httpx.AsyncClient, url: str, model: str, chat: bool = False) -> Tokenize | None:
    """A function that counts a text's tokens with the server's tokenizer, or None if the server offers none.

    chat: count the text as a user message rendered through the chat template (where the server can).
    """

    async def vllm_style(text: str) -> int | None:
        content: dict[str, object] = {"messages": [{"role": "user", "content": text}]} if chat else {"prompt": text}
        response = await client.post(f"{url}/tokenize", json={"model": model, **content})
        return response.json()["count"] if response.status_code == 200 else None

    async def llama_cpp_style(text: str) -> int | None:
        response = await client.post(f"{url}/extras/tokenize", json={"input": text})
        return len(response.json()["tokens"]) if response.status_code == 200 else None

    for count in (vllm_style, llama_cpp_style):
        try:
            if await count("hello world") is not None:
                return count
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            continue
    return None


async def fit_prompt(tokenize: Tokenize | None, rng: random.Random, length: int, index: int) -> tuple[str, int | None]:
    """A prompt of `length` tokens, or the longest shorter one a bisection on the word count finds."""
    state = rng.getstate()

    def text(n_words: int) -> str:
        rng.setstate(state)  # the same words each time: a longer prompt only grows at its end
        return _text(rng, n_words, index)

    n_words = max(1, round(length / TOKENS_PER_WORD_GUESS))
    if tokenize is None:
        return text(n_words), None
    fits, too_long = 0, None  # word counts known to fit and known to be too long
    best: tuple[str, int] | None = None
    for _ in range(MAX_TRIES):
        candidate = text(n_words)
        count = await tokenize(candidate)
        if count is None:
            return candidate, None
        if count <= length and (best is None or count > best[1]):
            best = (candidate, count)
        if count == length:
            break
        if count < length:
            fits = n_words
            step = max(1, round((length - count) * n_words / max(count, 1)))
            n_words = n_words + step if too_long is None else (fits + too_long) // 2
        else:
            too_long = n_words
            n_words = (fits + too_long) // 2
        if too_long is not None and too_long - fits <= 1:
            break
    if best is None:  # even one word is too long: send it anyway
        return text(1), await tokenize(text(1))
    if best[1] < length:
        # Qwen-style tokenizers split digits one by one, so digits glued to the end add one token each.
        padded = best[0] + "".join(str(rng.randrange(10)) for _ in range(length - best[1]))
        count = await tokenize(padded)
        if count is not None and best[1] < count <= length:
            best = (padded, count)
    return best


async def make_requests(client: httpx.AsyncClient, url: str, model: str, count: int, input_len: int,
                        output_len: int, seed: int = 0, chat: bool = False) -> list[BenchRequest]:
    """`count` requests with different prompts of about `input_len` tokens, each asking for `output_len` tokens.

    chat: the prompts are user messages, and `input_len` counts the chat template's tokens too where the server
    can render it for /tokenize (vLLM, lucid).
    """
    tokenize = await server_tokenizer(client, url, model, chat)
    requests = []
    for index in range(count):
        rng = random.Random(seed * 1_000_003 + index)
        prompt, prompt_len = await fit_prompt(tokenize, rng, input_len, index)
        requests.append(BenchRequest(prompt, output_len, prompt_len))
    return requests
