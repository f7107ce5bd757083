"""A tiny Qwen2-style tokenizer trained on the fly, for unit tests that must not need the real model.

It has the real one's shape: byte-level BPE with the qwen2 split, <|endoftext|> / <|im_start|> / <|im_end|> as
control tokens, <tool_call> / </tool_call> as user-defined ones, and a ChatML chat template. Its small
vocabulary splits most Chinese characters and emoji into single bytes, which is what streaming tests need.
"""

import json
from functools import cache
from typing import Any

from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import models, pre_tokenizers, trainers

from lucid.tokenizer.gguf_vocab import pre_tokenizer_for
from lucid.tokenizer.tokenizer import Tokenizer

TINY_CONTROL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TINY_USER_DEFINED_TOKENS = ("<tool_call>", "</tool_call>")

# ChatML, as Qwen2 writes conversations; kept minimal on purpose (no tools, no default system prompt).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. I'm sure it's fine; they've said we'll see.",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(add(i, 2))\n",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2024-01-01",
    "你好，世界！我是一个语言模型。详细介绍下你自己。",
    "Hello, world! Hello again, world. The model answers questions and writes code.",
]


@cache
def tiny_gguf_fields(vocab_size: int = 400) -> dict[str, Any]:
    """GGUF-style tokenizer fields (as `Tokenizer.from_gguf_fields` takes them) of a freshly trained tiny BPE."""
    backend = BackendTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizer_for("qwen2", "tiny")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(_CORPUS, trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    # Merges are serialized as [left, right] pairs by recent `tokenizers`, as "left right" strings by older ones.
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    n = len(tokens)
    tokens += [*TINY_CONTROL_TOKENS, *TINY_USER_DEFINED_TOKENS]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.token_type": [1] * n + [3] * len(TINY_CONTROL_TOKENS) + [4] * len(TINY_USER_DEFINED_TOKENS),
        "tokenizer.ggml.eos_token_id": n + 2,  # <|im_end|>
        "tokenizer.ggml.bos_token_id": n,  # <|endoftext|>, as in Qwen2
        "tokenizer.ggml.padding_token_id": n,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": TINY_CHAT_TEMPLATE,
    }


def tiny_tokenizer() -> Tokenizer:
    """A `Tokenizer` built from `tiny_gguf_fields()`; about 0.1 s, no files needed."""
    return Tokenizer.from_gguf_fields(dict(tiny_gguf_fields()), "tiny")
