"""The grammar engine, llguidance: the model's vocabulary in its form, and grammars compiled once per spec.

Why llguidance (measured in benchmarks/grammar_backends.py, see README): a dependency-free wheel (xgrammar pulls
transformers and triton), a compile of a typical tool schema in milliseconds with no per-vocabulary
preprocessing, and a mask in well under a millisecond per token over Qwen's 151,936 tokens.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import llguidance
from llguidance.gbnf_to_lark import any_to_lark

from lucid.structured.spec import GrammarSpec, StructuredOutputError

CACHE_SIZE = 256  # compiled grammars kept (an agent framework sends the same few tool sets again and again)
# Output JSON the way Python's json.dumps and the models' own training data write it: ", " and ": ", nothing else.
# Flexible whitespace lets a small model wander into endless newlines inside an object.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def build_llg_tokenizer(tokenizer: Any, vocab_size: int) -> llguidance.LLTokenizer:
    """llguidance's view of a lucid Tokenizer (its `tokenizers` backend, serialized); rows past the tokenizer's
    own vocabulary (the model's padded embedding rows) are never allowed. Takes ~1-3 s on Qwen's vocabulary."""
    return llguidance.LLTokenizer(tokenizer._backend.to_str(), n_vocab=vocab_size,
                                  eos_token=list(tokenizer.eos_token_ids))


def grammar_text(spec: GrammarSpec) -> str:
    """The spec as an llguidance grammar (its JSON form). Raises StructuredOutputError for sources it cannot read."""
    try:
        if spec.kind == "json":
            return llguidance.LLMatcher.grammar_from_json_schema(json.loads(spec.source), overrides=JSON_OPTIONS)
        if spec.kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(spec.source)
        if spec.kind == "choice":
            options = json.loads(spec.source)
            if any(not o for o in options):
                raise StructuredOutputError(f"{spec.param}: 'choice' options must be non-empty strings",
                                            param=spec.param)
            # Lark string literals read JSON's escapes, so json.dumps writes each option exactly.
            return llguidance.LLMatcher.grammar_from_lark(
                "start: " + " | ".join(json.dumps(o, ensure_ascii=False) for o in options))
        if spec.kind == "grammar":  # llama.cpp's GBNF (vLLM users send it as EBNF) or Lark, told apart by syntax
            return llguidance.LLMatcher.grammar_from_lark(any_to_lark(spec.source))
        return llguidance.LLMatcher.grammar_from_lark(spec.source)
    except StructuredOutputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the converters raise ValueError, AssertionError, ...
        raise StructuredOutputError(f"{spec.param}: invalid {spec.kind}: {exc}", param=spec.param) from None


def describe_error(spec: GrammarSpec, message: str) -> str:
    """The grammar engine's message, led by the request field; a schema keyword it cannot express is named."""
    message = message.strip()
    if "Unimplemented keys" in message or "not supported" in message.lower():
        return f"{spec.param}: the schema uses a keyword lucid cannot enforce: {message}"
    return f"{spec.param}: invalid {'JSON schema' if spec.kind == 'json' else spec.kind}: {message}"


class GrammarCompiler:
    """Compiled grammars by spec (an LRU of ready matchers in their start state); a request gets a copy.

    Thread-safe: the server compiles (to answer a bad schema with a 400 before queueing) while the engine thread
    takes copies for its sequences.
    """

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._ll_tokenizer: llguidance.LLTokenizer | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[GrammarSpec, llguidance.LLMatcher] = OrderedDict()
        self.num_compiled = 0   # cache misses, for tests and benchmarks

    @property
    def ll_tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._ll_tokenizer is None:
                self._ll_tokenizer = build_llg_tokenizer(self._tokenizer, self.vocab_size)
            return self._ll_tokenizer

    def compile(self, spec: GrammarSpec) -> llguidance.LLMatcher:
        """The cached start-state matcher of `spec`, compiling it on a miss. Raises StructuredOutputError."""
        with self._lock:
            found = self._cache.get(spec)
            if found is not None:
                self._cache.move_to_end(spec)
                return found
        grammar = grammar_text(spec)
        matcher = llguidance.LLMatcher(self.ll_tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise StructuredOutputError(describe_error(spec, matcher.get_error()), param=spec.param)
        with self._lock:
            self._cache[spec] = matcher
            self.num_compiled += 1
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return matcher

    def new_matcher(self, spec: GrammarSpec) -> llguidance.LLMatcher:
        """A fresh matcher for one sequence (a copy of the compiled one: cheap)."""
        prototype = self.compile(spec)
        with self._lock:
            return prototype.deep_copy()
