"""xgrammar vs llguidance on the default model's vocabulary (151,936 tokens): the numbers behind lucid's choice.

For a typical tool schema (a weather function) it measures, per backend:
  - compile time (schema -> grammar ready to match; first time, no cache),
  - per-token mask time: compute the allowed-token bitmask, then accept the next token of a valid answer,
    averaged over the answer's tokens.

    .venv/bin/pip install xgrammar llguidance     # xgrammar is not a lucid dependency; install it to compare
    .venv/bin/python benchmarks/grammar_backends.py [--repeats 5]

A backend that is not installed is reported as such and skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and country, e.g. Paris, France"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "include_hourly": {"type": "boolean"},
    },
    "required": ["location", "unit"],
    "additionalProperties": False,
}
ANSWER = '{"location": "Paris, France", "unit": "celsius", "days": 3, "include_hourly": false}'


def load_tokenizer():
    from lucid.loader import default_model_path
    from lucid.loader.gguf_file import TOKENIZER_KEYS, open_gguf, read_metadata
    from lucid.tokenizer import Tokenizer

    path = Path(default_model_path(progress=False))
    meta = read_metadata(open_gguf(path))
    return Tokenizer.from_gguf_fields({k: meta[k] for k in TOKENIZER_KEYS if k in meta}, str(path))


def bench_llguidance(tokenizer, answer_ids: list[int], schema: dict, repeats: int) -> dict:
    import llguidance
    import llguidance.torch as llg_torch

    from lucid.structured.backend import build_llg_tokenizer

    vocab = 151_936
    started = time.perf_counter()
    ll_tok = build_llg_tokenizer(tokenizer, vocab)
    tokenizer_s = time.perf_counter() - started
    compiles, per_token = [], []
    for i in range(repeats):
        # A unique title defeats any cache inside the library: every repeat is a first compile.
        grammar = llguidance.LLMatcher.grammar_from_json_schema({**schema, "title": f"r{i}"})
        started = time.perf_counter()
        matcher = llguidance.LLMatcher(ll_tok, grammar)
        compiles.append(time.perf_counter() - started)
        assert not matcher.is_error(), matcher.get_error()
        bitmask = llg_torch.allocate_token_bitmask(1, vocab)
        started = time.perf_counter()
        for token in answer_ids:
            llg_torch.fill_next_token_bitmask(matcher, bitmask, 0)
            assert matcher.consume_token(token), matcher.get_error()
        per_token.append((time.perf_counter() - started) / len(answer_ids))
    return {"tokenizer_setup_s": tokenizer_s, "compile_ms": 1e3 * statistics.median(compiles),
            "mask_ms_per_token": 1e3 * statistics.median(per_token)}


def bench_xgrammar(tokenizer, answer_ids: list[int], schema: dict, repeats: int) -> dict:
    import xgrammar

    vocab = 151_936
    started = time.perf_counter()
    encoded = [tokenizer.id_to_token(i) or "" for i in range(tokenizer.vocab_size)]
    info = xgrammar.TokenizerInfo(encoded, vocab_type=xgrammar.VocabType.BYTE_LEVEL, vocab_size=vocab,
                                  stop_token_ids=tokenizer.eos_token_ids)
    tokenizer_s = time.perf_counter() - started
    compiles, per_token = [], []
    for i in range(repeats):
        compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        started = time.perf_counter()
        compiled = compiler.compile_json_schema(json.dumps({**schema, "title": f"r{i}"}))
        compiles.append(time.perf_counter() - started)
        matcher = xgrammar.GrammarMatcher(compiled)
        bitmask = xgrammar.allocate_token_bitmask(1, vocab)
        started = time.perf_counter()
        for token in answer_ids:
            matcher.fill_next_token_bitmask(bitmask)
            assert matcher.accept_token(token)
        per_token.append((time.perf_counter() - started) / len(answer_ids))
    return {"tokenizer_setup_s": tokenizer_s, "compile_ms": 1e3 * statistics.median(compiles),
            "mask_ms_per_token": 1e3 * statistics.median(per_token)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tokenizer = load_tokenizer()
    answer_ids = tokenizer.encode(ANSWER)
    print(f"schema: weather tool ({len(WEATHER_SCHEMA['properties'])} properties); answer: {len(answer_ids)} tokens")
    for name, bench in (("llguidance", bench_llguidance), ("xgrammar", bench_xgrammar)):
        try:
            result = bench(tokenizer, answer_ids, WEATHER_SCHEMA, args.repeats)
        except ImportError as exc:
            print(f"{name:11s} not installed ({exc})")
            continue
        print(f"{name:11s} tokenizer setup {result['tokenizer_setup_s']:.2f} s | compile {result['compile_ms']:.1f} ms"
              f" | mask + accept {result['mask_ms_per_token']:.3f} ms/token")


if __name__ == "__main__":
    main()
