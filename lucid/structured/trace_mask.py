"""The grammar mask for `lucid trace`: the engine's StructuredDecoder on a one-sequence batch, so the trace shows
exactly the mask the server applies (how many tokens it allowed at each step)."""

from __future__ import annotations

from typing import Any

import torch

from lucid.engine.sequence import Sequence
from lucid.sampling_params import SamplingParams
from lucid.structured.backend import GrammarCompiler
from lucid.structured.decoder import StructuredDecoder


class GrammarTrace:
    def __init__(self, tokenizer: Any, vocab_size: int, prompt_ids: list[int], params: SamplingParams) -> None:
        self.decoder = StructuredDecoder(GrammarCompiler(tokenizer, vocab_size), list(tokenizer.eos_token_ids))
        self.decoder.record_allowed = True
        self.decoder.compiler.compile(params.structured)   # a bad grammar fails before the first step
        self.seq = Sequence("trace", 0, prompt_ids, params)

    def mask(self, logits: torch.Tensor) -> int:
        """Mask (1, V) logits in place; the number of tokens the grammar allows at this step."""
        self.decoder.mask_logits([self.seq], logits)
        return self.decoder.allowed_counts(self.seq)[-1]

    def accept(self, token_id: int) -> None:
        self.seq.append_token(token_id)
