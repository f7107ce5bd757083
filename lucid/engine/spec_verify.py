"""Speculative decoding, the verifying half: which drafts a verify row keeps, with the output distribution unchanged.

A verify row of k drafts gives k+1 rows of logits: row j is the model's next-token distribution after the
sequence's tokens and drafts d_1..d_j. Each row goes through every sampling option first (bias, penalties and
min_tokens with the drafts before it counted as output, then temperature, top-k, top-p, min-p: the sampler's
`process_logits` and `sampling_probs`), giving p_j. Then, draft by draft:
- greedy: keep d_{j+1} while it is the argmax of row j; the first mismatch emits the argmax instead;
- sampled (the rule for a point-mass draft, Leviathan et al. 2023 / Chen et al. 2023): keep d with probability
  p_j(d); on rejection emit a draw from p_j with d removed and renormalised. Kept or not, the emitted token is
  distributed exactly as p_j.
When all k are kept, row k's distribution gives one more token. So a row emits 1..k+1 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lucid.engine.sequence import Sequence
from lucid.layers.sampler import SamplingTensors, process_logits, sampling_probs


class DraftView:
    """A sequence as row j of its verify row sees it: its tokens plus the first j drafts as output. Carries what
    the runner's sampling-tensor builder reads (a seeded sequence's rows share its one generator by seq_id)."""

    __slots__ = ("seq_id", "index", "params", "token_ids", "num_prompt_tokens")

    def __init__(self, seq: Sequence, drafts: list[int]) -> None:
        self.seq_id = seq.seq_id
        self.index = seq.index
        self.params = seq.params
        self.token_ids = seq.token_ids + drafts
        self.num_prompt_tokens = seq.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens


def draft_views(seq: Sequence, drafts: list[int]) -> list[DraftView]:
    """The k+1 views of one verify row, in row order."""
    return [DraftView(seq, drafts[:j]) for j in range(len(drafts) + 1)]


@dataclass
class Verified:
    tokens: list[int]            # emitted tokens: the kept drafts, then one sampled token
    rows: list[int]              # the logits row each emitted token came from (for logprobs)

    @property
    def num_accepted(self) -> int:
        return len(self.tokens) - 1


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token from a (V,) distribution: argmax(p / E), E ~ Exp(1) (the exponential race, as the sampler draws)."""
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return int((probs / noise).argmax())


def verify_drafts(logits: torch.Tensor, drafts: list[list[int]], t: SamplingTensors) -> list[Verified]:
    """logits (R, V) of every verify row's k+1 rows, in order; `t` built over `draft_views` of the same rows.
    Returns, per verify row, the tokens it emits."""
    processed = process_logits(logits, t)                                   # (R, V)
    greedy_ids = processed.argmax(dim=-1).tolist()
    temperature = t.temperature.tolist()
    probs = None if t.all_greedy else sampling_probs(processed, t)          # (R, V)
    out: list[Verified] = []
    row = 0
    for draft in drafts:
        tokens: list[int] = []
        rows: list[int] = []
        generator = t.generators[row]
        greedy = temperature[row] == 0
        for j in range(len(draft) + 1):
            r = row + j
            rows.append(r)
            if greedy:
                target = greedy_ids[r]
                tokens.append(target)
                if j == len(draft) or draft[j] != target:
                    break
                continue
            p = probs[r]
            if j == len(draft):
                tokens.append(_draw(p, generator))
                break
            d = draft[j]
            u = float(torch.rand((), generator=generator))
            if u < float(p[d]):
                tokens.append(d)
                continue
            residual = p.clone()
            residual[d] = 0.0
            # p(d) = 1 would always be kept above; a residual can only be empty through rounding: keep p's mode.
            tokens.append(_draw(residual, generator) if float(residual.sum()) > 0 else greedy_ids[r])
            break
        out.append(Verified(tokens, rows))
        row += len(draft) + 1
    return out
