"""The grammar mask's own cost per engine step: StructuredDecoder.mask_logits on the default model's vocabulary
(151,936 tokens) for R constrained rows at once, on random logits, each row then taking its best allowed token
(so the matchers walk a real JSON document). No forward pass: this isolates what the mask adds to a step.

    .venv/bin/python benchmarks/structured_mask_step.py [--rows 1 16] [--steps 60] [--repeats 3]

Compare two versions by running it in each checkout (PYTHONPATH=<checkout>) one after the other.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from structured_bench import RECORDS

from lucid.engine.sequence import Sequence
from lucid.loader import default_model_path
from lucid.loader.gguf_file import open_gguf
from lucid.sampling_params import SamplingParams
from lucid.structured import GrammarSpec
from lucid.structured.backend import GrammarCompiler
from lucid.structured.decoder import StructuredDecoder
from lucid.tokenizer import Tokenizer


def default_tokenizer() -> Tokenizer:
    """The default model's tokenizer alone, from its GGUF metadata (no weights loaded)."""
    path = default_model_path(progress=False)
    fields = {name: f.contents() for name, f in open_gguf(path).fields.items() if name.startswith("tokenizer.")}
    return Tokenizer.from_gguf_fields(fields, source=str(path))


def ms_per_step(compiler: GrammarCompiler, eos_ids: list[int], rows: int, steps: int, seed: int) -> float:
    decoder = StructuredDecoder(compiler, eos_ids)
    spec = GrammarSpec.json_schema(RECORDS)
    seqs = [Sequence(f"row{i}", i, [1, 2, 3], SamplingParams(max_tokens=10_000, structured=spec))
            for i in range(rows)]
    gen = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(steps):
        logits = torch.randn(rows, compiler.vocab_size, generator=gen)
        started = time.perf_counter()
        decoder.mask_logits(seqs, logits)
        times.append(time.perf_counter() - started)
        for seq, token in zip(seqs, logits.argmax(dim=-1).tolist()):
            seq.append_token(token)
    return 1e3 * statistics.median(times[5:])   # the first steps build the vocabulary's index and compile the kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tokenizer = default_tokenizer()
    compiler = GrammarCompiler(tokenizer, tokenizer.vocab_size)
    for rows in args.rows:
        figures = [ms_per_step(compiler, list(tokenizer.eos_token_ids), rows, args.steps, r)
                   for r in range(args.repeats)]
        print(f"{rows:2d} rows: mask_logits {' / '.join(f'{f:.2f}' for f in figures)} ms per step "
              f"(median {statistics.median(figures):.2f}; {statistics.median(figures) / rows:.3f} ms per row)")


if __name__ == "__main__":
    main()
