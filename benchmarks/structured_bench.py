"""The cost of constrained decoding on the default model, in-process (the serving weights, `-q` as `lucid serve`).

  - schema compile time: a typical tool schema (weather), first compile and a cache hit;
  - 1 stream: ms per output token with a json_schema constraint vs unconstrained, and the time spent building and
    applying the mask itself (StructuredDecoder.mask_logits) per token;
  - 16 concurrent streams: output tok/s with json_schema on all 16 vs 16 unconstrained.

Both sides generate exactly --tokens tokens (the schema is a long array that cannot end sooner; the unconstrained
side ignores EOS), so they do the same forward work and differ only by the mask. Runs alternate, median of --runs.

    .venv/bin/python benchmarks/structured_bench.py [--tokens 128] [--runs 3] [--streams 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from lucid import LLM, SamplingParams
from lucid.config import DEFAULT_QUANTIZATION
from lucid.structured import GrammarSpec
from lucid.structured.backend import GrammarCompiler

WEATHER = {"type": "object", "properties": {
    "location": {"type": "string", "description": "City and country"},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 14}, "include_hourly": {"type": "boolean"}},
    "required": ["location", "unit"], "additionalProperties": False}
# A long list of records: it cannot be complete within --tokens, so constrained runs end by length like the others.
RECORDS = {"type": "array", "minItems": 200, "items": {"type": "object", "properties": {
    "id": {"type": "integer", "minimum": 0}, "name": {"type": "string", "maxLength": 16},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
    "active": {"type": "boolean"}}, "required": ["id", "name", "tags", "active"], "additionalProperties": False}}
PROMPT = [{"role": "user", "content": "List the employees of a small company as JSON records."}]


def compile_times(llm: LLM, repeats: int = 5) -> tuple[float, float]:
    """Median first-compile ms of the weather schema (a fresh title each time: no cache) and a cache hit's ms."""
    compiler = GrammarCompiler(llm.tokenizer, llm.config.vocab_size)
    assert compiler.ll_tokenizer is not None  # built once per engine, not per schema
    firsts = []
    for i in range(repeats):
        spec = GrammarSpec.json_schema({**WEATHER, "title": f"weather {i}"})
        started = time.perf_counter()
        compiler.compile(spec)
        firsts.append(time.perf_counter() - started)
    started = time.perf_counter()
    compiler.new_matcher(spec)
    return 1e3 * statistics.median(firsts), 1e3 * (time.perf_counter() - started)


class MaskTimer:
    """Wraps the runner's StructuredDecoder.mask_logits to add up the seconds it takes."""

    def __init__(self, llm: LLM) -> None:
        self.decoder = llm.engine.runner.structured
        self.seconds = 0.0
        inner = self.decoder.mask_logits

        def timed(seqs, logits):  # noqa: ANN001, ANN202
            started = time.perf_counter()
            inner(seqs, logits)
            self.seconds += time.perf_counter() - started

        self.decoder.mask_logits = timed


def run(llm: LLM, streams: int, tokens: int, constrained: bool, seed: int) -> tuple[float, int]:
    """(seconds, output tokens) for `streams` concurrent requests of `tokens` tokens each."""
    spec = GrammarSpec.json_schema(RECORDS) if constrained else None
    prompt = llm.encode_chat(PROMPT)
    engine = llm.engine
    started = time.perf_counter()
    for i in range(streams):
        params = SamplingParams(temperature=0.8, seed=seed * 100 + i, max_tokens=tokens, ignore_eos=not constrained,
                                structured=spec)
        engine.add_request(f"bench-{constrained}-{seed}-{i}", prompt, params)
    produced = 0
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                produced += sum(len(c.token_ids) for c in out.outputs)
    return time.perf_counter() - started, produced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--quantization", "-q", default=DEFAULT_QUANTIZATION)
    args = parser.parse_args()
    llm = LLM(None, quantization=args.quantization)
    first_ms, hit_ms = compile_times(llm)
    print(f"compile: weather tool schema {first_ms:.2f} ms first time, {hit_ms:.3f} ms from the cache")
    timer = MaskTimer(llm)
    run(llm, 1, 8, True, 999)  # warm-up: the first constrained request builds the vocabulary's index
    run(llm, 1, 8, False, 999)
    results = {}
    for streams in (1, args.streams):
        free_rates, json_rates, mask_per_token = [], [], []
        for r in range(args.runs):
            seconds, produced = run(llm, streams, args.tokens, False, r)
            free_rates.append(produced / seconds)
            timer.seconds = 0.0
            seconds, produced = run(llm, streams, args.tokens, True, r)
            json_rates.append(produced / seconds)
            mask_per_token.append(timer.seconds / produced)
        free, constrained = statistics.median(free_rates), statistics.median(json_rates)
        mask_ms = 1e3 * statistics.median(mask_per_token)
        results[streams] = {"unconstrained_tok_s": free, "json_schema_tok_s": constrained, "ratio": constrained / free,
                            "ms_per_token_unconstrained": 1e3 / free * streams,
                            "ms_per_token_json_schema": 1e3 / constrained * streams, "mask_ms_per_token": mask_ms}
        print(f"{streams:2d} stream(s): unconstrained {free:.1f} tok/s, json_schema {constrained:.1f} tok/s "
              f"({100 * constrained / free:.0f}%); per stream-token {1e3 / free * streams:.1f} vs "
              f"{1e3 / constrained * streams:.1f} ms; mask itself {mask_ms:.3f} ms per token")
    print(json.dumps({"compile_ms": first_ms, "cache_hit_ms": hit_ms, **{f"streams_{k}": v for k, v in
                                                                         results.items()}}))


if __name__ == "__main__":
    main()
