"""Turn a batch of logits into next tokens, each row with its own sampling parameters.

Order, as OpenAI/vLLM apply it: logit_bias and min_tokens masks, penalties, then greedy argmax or
temperature → top-k → top-p → min-p → draw. Log-probabilities reported to clients come from the raw
logits, before any of this.

The draw is built to cost little next to the model's step (a decode step at 16 rows reads 16 × 151,936 logits):
- one uniform number per row and an inverse-CDF search (`draw`), no random number per vocabulary entry;
- top-k by partial selection (`topk`); top-p and min-p then work on those k candidates only;
- a row without top-k makes a few vectorized passes over its vocabulary (max, exp, chunk sums); top-p or min-p
  without a top-k selects only as many of the best tokens as they can keep (the mass p; the min-p floor), and when
  every row of the batch is so restricted, the draw searches those candidates, not the vocabulary;
- a seeded row draws its uniform from its own generator, so its tokens never depend on the batch around it.
`apply_top_k`, `apply_top_p` and `apply_min_p` are the rules on dense (B, V) logits, exactly as their formulas
read; `sampling_probs` gives the same distribution the fast path draws from (the tests hold them to each other).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

NEG_INF = float("-inf")
# Top-p without a top-k: the first candidate set it tries, and how much it grows when the set's mass falls short.
NUCLEUS_FIRST = 64
NUCLEUS_GROWTH = 8
# A whole-vocabulary draw searches chunk sums first, then inside one chunk: a cumulative sum over the vocabulary is
# one slow serial pass, sums over contiguous chunks are a fast vectorized one.
CDF_CHUNK = 256


@dataclass
class SamplingTensors:
    """Per-row parameters of one step, as tensors on the logits' device (built by the model runner)."""

    temperature: torch.Tensor              # (B,) 0 = greedy
    top_k: torch.Tensor                    # (B,) long, 0 = off
    top_p: torch.Tensor                    # (B,) 1 = off
    min_p: torch.Tensor                    # (B,) 0 = off
    repetition_penalty: torch.Tensor       # (B,) 1 = off
    presence_penalty: torch.Tensor         # (B,) 0 = off
    frequency_penalty: torch.Tensor        # (B,) 0 = off
    output_counts: torch.Tensor | None     # (B, V) occurrences of each token in the output (penalties only)
    seen_mask: torch.Tensor | None         # (B, V) bool: token in prompt or output (repetition penalty only)
    bias: torch.Tensor | None              # (B, V) additive logit_bias (and -inf for banned ids)
    generators: list[torch.Generator | None]  # a seeded request's own generator, else None
    all_greedy: bool
    num_top_logprobs: int                  # max over rows asking for logprobs; -1 when none asks

    def rows(self, index: list[int]) -> SamplingTensors:
        """The same parameters for a subset of the rows, in `index` order."""
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value[index]
            elif isinstance(value, list):
                value = [value[i] for i in index]
            picked[f.name] = value
        picked["all_greedy"] = bool((picked["temperature"] == 0).all())
        return SamplingTensors(**picked)


@dataclass
class Candidates:
    """Each row's sampling distribution as unnormalized weights over token ids. `ids` is None when the weights
    cover the whole vocabulary in order (B, V); else ids and weights are (B, K), best first."""

    ids: torch.Tensor | None
    weights: torch.Tensor

    def dense_probs(self, vocab_size: int) -> torch.Tensor:
        """(B, V) probabilities, zero outside the candidates."""
        probs = self.weights / self.weights.sum(dim=-1, keepdim=True)
        if self.ids is None:
            return probs
        return torch.zeros(probs.shape[0], vocab_size, dtype=probs.dtype, device=probs.device).scatter_(
            1, self.ids, probs)


# ---- bias and penalties ------------------------------------------------------------------------------------
def apply_bias(logits: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return logits if bias is None else logits + bias


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """For tokens already seen: positive logits divided by the penalty, negative ones multiplied (CTRL paper)."""
    p = penalty.unsqueeze(1)                                          # (B, 1)
    penalized = torch.where(logits > 0, logits / p, logits * p)
    return torch.where(seen, penalized, logits)


def apply_presence_frequency(logits: torch.Tensor, counts: torch.Tensor, presence: torch.Tensor,
                             frequency: torch.Tensor) -> torch.Tensor:
    """OpenAI's rule: logit - frequency * count - presence * (count > 0), over the output so far."""
    return logits - frequency.unsqueeze(1) * counts - presence.unsqueeze(1) * (counts > 0).to(logits.dtype)


def process_logits(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """Bias, masks and penalties: the logits greedy decoding takes the argmax of."""
    logits = apply_bias(logits, t.bias)
    if t.seen_mask is not None:
        logits = apply_repetition_penalty(logits, t.seen_mask, t.repetition_penalty)
    if t.output_counts is not None:
        logits = apply_presence_frequency(logits, t.output_counts, t.presence_penalty, t.frequency_penalty)
    return logits


# ---- the rules on dense logits (the formulas; the fast path below must give the same distribution) ---------
def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep each row's k largest logits (exactly k: a tie at the k-th value goes to `topk`'s pick); 0 keeps all."""
    vocab = logits.shape[-1]
    k = torch.where(top_k <= 0, vocab, top_k.clamp(max=vocab))
    kmax = int(k.max())
    ids = logits.topk(kmax, dim=-1).indices                                           # (B, kmax)
    keep = torch.arange(kmax, device=logits.device).unsqueeze(0) < k.unsqueeze(1)      # (B, kmax)
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, ids, keep)
    return logits.masked_fill(~mask, NEG_INF)


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of top tokens whose probability reaches top_p (always at least the top one)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs                        # probability of strictly better tokens
    drop_sorted = (mass_before >= top_p.unsqueeze(1)) & (top_p < 1).unsqueeze(1)  # 1 = off, whatever the rounding
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the top token's probability."""
    probs = logits.softmax(dim=-1)
    threshold = probs.max(dim=-1, keepdim=True).values * min_p.unsqueeze(1)
    return logits.masked_fill(probs < threshold, NEG_INF)


# ---- the fast path: candidates, then one uniform per row ---------------------------------------------------
def _inverse_temperature(t: SamplingTensors) -> torch.Tensor:
    return (1.0 / torch.where(t.temperature > 0, t.temperature, 1.0)).unsqueeze(1)          # (B, 1)


def _tempered_softmax(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """softmax(logits / T) over the whole vocabulary (one fused kernel; no scaled copy when every T is 1)."""
    scaled = logits if bool((t.temperature == 1).all()) else logits * _inverse_temperature(t)
    return scaled.softmax(dim=-1)


def _top_k_candidates(logits: torch.Tensor, t: SamplingTensors) -> Candidates:
    """Every row has a top-k: its k best logits by partial selection, then temperature, top-p, min-p on those."""
    k = t.top_k.clamp(max=logits.shape[-1])
    values, ids = logits.topk(int(k.max()), dim=-1)                                    # (B, K), best first
    beyond_k = torch.arange(values.shape[1], device=values.device).unsqueeze(0) >= k.unsqueeze(1)
    scaled = (values - values[:, :1]) * _inverse_temperature(t)                        # (B, K), top one at 0
    weights = scaled.exp().masked_fill_(beyond_k, 0.0)
    if bool((t.top_p < 1).any()):
        weights = weights.masked_fill_(~_nucleus(weights, weights.sum(dim=-1, keepdim=True), t.top_p), 0.0)
    if bool((t.min_p > 0).any()):
        weights = weights.masked_fill_(weights < t.min_p.unsqueeze(1), 0.0)          # the top weight is 1
    return Candidates(ids, weights)


def _nucleus(sorted_weights: torch.Tensor, total: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """(B, K) bool: which of the best-first candidates top-p keeps, mass taken against each row's `total`."""
    probs = sorted_weights / total
    mass_before = probs.cumsum(dim=-1) - probs
    keep = (mass_before < top_p.unsqueeze(1)) | (top_p >= 1).unsqueeze(1)             # 1 = off, whatever the rounding
    keep[:, 0] = True
    return keep


def _dense_candidates(logits: torch.Tensor, t: SamplingTensors) -> Candidates:
    """Rows over the whole vocabulary: softmax(logits / T) (one fused vectorized kernel, faster than a separate
    exp), then top-k, top-p and min-p as zeroed weights."""
    weights = _tempered_softmax(logits, t)                                             # (B, V)
    k_rows = (t.top_k > 0).nonzero().flatten().tolist()
    if k_rows:  # a mixed batch: the rows with a top-k keep their k best only
        weights[k_rows] = weights[k_rows].masked_fill_(apply_top_k(logits[k_rows], t.top_k[k_rows]) == NEG_INF, 0)
    p_rows = (t.top_p < 1).nonzero().flatten().tolist()
    if p_rows:
        weights[p_rows] = _nucleus_dense(weights[p_rows], t.top_p[p_rows])
    if bool((t.min_p > 0).any()):
        threshold = weights.amax(dim=-1, keepdim=True) * t.min_p.unsqueeze(1)           # (B, 1)
        weights = weights.masked_fill_(weights < threshold, 0.0)
    return Candidates(None, weights)


def _nucleus_dense(weights: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Top-p over whole-vocabulary weights, sorting only the best tokens (`_best_until`), the rest zeroed."""
    total = weights.sum(dim=-1, keepdim=True)
    values, ids = _best_until(weights, lambda best: best.sum(dim=-1) >= top_p * total.squeeze(1))
    kept = values.masked_fill_(~_nucleus(values, total, top_p), 0.0)
    return torch.zeros_like(weights).scatter_(1, ids, kept)


def _best_until(scores: torch.Tensor, enough: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Each row's best scores and their ids, best first: the best NUCLEUS_FIRST, grown NUCLEUS_GROWTH-fold until
    `enough(best)` holds for every row (or the set is the whole vocabulary). A partial selection, not a sort."""
    size = NUCLEUS_FIRST
    while True:
        size = min(size, scores.shape[-1])
        values, ids = scores.topk(size, dim=-1)                                        # (B, size), best first
        if size == scores.shape[-1] or bool(enough(values).all()):
            return values, ids
        size *= NUCLEUS_GROWTH


def _restricted_candidates(logits: torch.Tensor, t: SamplingTensors) -> Candidates:
    """Rows without a top-k whose top-p or min-p keeps only some of the best tokens: softmax(logits / T) (one fused
    kernel), then only those best tokens, by partial selection grown until the set holds every token the rules can
    keep. No vocabulary-sized scatter or draw: the draw then searches the candidates."""
    probs = _tempered_softmax(logits, t)                                               # (B, V), rows sum to 1
    nucleus = t.top_p < 1
    strict_min_p = (t.min_p > 0) & ~nucleus   # rows that min-p alone restricts: the set must reach below its floor

    def enough(best: torch.Tensor) -> torch.Tensor:
        held = ~nucleus | (best.sum(dim=-1) >= t.top_p)
        return held & (~strict_min_p | (best[:, -1] < t.min_p * best[:, 0]))

    values, ids = _best_until(probs, enough)
    weights = values.masked_fill_(~_nucleus(values, values.new_ones(values.shape[0], 1), t.top_p), 0.0)
    if bool((t.min_p > 0).any()):
        weights = weights.masked_fill_(weights < values[:, :1] * t.min_p.unsqueeze(1), 0.0)
    return Candidates(ids, weights)


def sampling_candidates(logits: torch.Tensor, t: SamplingTensors) -> Candidates:
    """Processed logits -> each row's sampling distribution (temperature, top-k, top-p, min-p) as candidates."""
    if bool((t.top_k > 0).all()):
        return _top_k_candidates(logits, t)
    if not bool((t.top_k > 0).any()) and bool(((t.top_p < 1) | (t.min_p > 0)).all()):
        return _restricted_candidates(logits, t)
    return _dense_candidates(logits, t)


def sampling_probs(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """Processed logits -> the (B, V) distribution a non-greedy row draws from (temperature, top-k, top-p, min-p)."""
    return sampling_candidates(logits, t).dense_probs(logits.shape[-1])


def uniforms(generators: list[torch.Generator | None], device: torch.device) -> torch.Tensor:
    """(B,) uniform numbers in [0, 1): a seeded row's from its own generator, so it never depends on the batch."""
    u = torch.empty(len(generators), device=device)
    unseeded = [i for i, g in enumerate(generators) if g is None]
    if unseeded:
        u[unseeded] = torch.rand(len(unseeded), device=device)
    for i, g in enumerate(generators):
        if g is not None:
            u[i] = torch.rand(1, generator=g, device=device)[0]
    return u


def _search(weights: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the first index whose cumulative weight exceeds target (B,), and the weight before it. The target
    is held just under the row's total, so rounding can never land on a zero-weight tail."""
    cumulative = weights.cumsum(dim=-1)                                                # (B, N)
    last = cumulative[:, -1]
    target = torch.minimum(target, torch.nextafter(last, torch.zeros_like(last)))
    index = torch.searchsorted(cumulative, target.unsqueeze(1), right=True).squeeze(1).clamp_(max=weights.shape[1] - 1)
    before = cumulative.gather(1, index.unsqueeze(1)).squeeze(1) - weights.gather(1, index.unsqueeze(1)).squeeze(1)
    return index, before


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(B, N) nonnegative weights, (B,) uniforms -> (B,) index i with probability weights[i] / sum: the first
    index whose cumulative weight exceeds u × total. Long rows search CDF_CHUNK-wide chunk sums first."""
    rows, n = weights.shape
    if n <= 4 * CDF_CHUNK:
        return _search(weights, u * weights.sum(dim=-1))[0]
    whole = n // CDF_CHUNK * CDF_CHUNK
    sums = weights[:, :whole].view(rows, -1, CDF_CHUNK).sum(dim=-1)                    # (B, chunks)
    if whole < n:
        sums = torch.cat([sums, weights[:, whole:].sum(dim=-1, keepdim=True)], dim=1)
    chunk, before = _search(sums, u * sums.sum(dim=-1))
    start = chunk * CDF_CHUNK
    positions = start.unsqueeze(1) + torch.arange(CDF_CHUNK, device=weights.device)    # (B, CDF_CHUNK)
    inside = weights.gather(1, positions.clamp(max=n - 1)).masked_fill_(positions >= n, 0.0)
    target = (u * sums.sum(dim=-1) - before).clamp_(min=0.0)
    return start + _search(inside, target)[0]


def draw(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """One token per row from (B, N) probabilities (or any nonnegative weights): inverse CDF, one uniform a row."""
    return inverse_cdf(probs, uniforms(generators, probs.device))


def draw_candidates(candidates: Candidates, generators: list[torch.Generator | None]) -> torch.Tensor:
    """One token per row. The search always runs in vocabulary order (candidates are put in id order first), so a
    row's uniform maps to the same token whichever path its batch took: a seeded row's tokens never depend on
    its neighbours."""
    if candidates.ids is None:
        return draw(candidates.weights, generators)
    ids, order = candidates.ids.sort(dim=-1)                                          # (B, K) ascending ids
    position = draw(candidates.weights.gather(1, order), generators)
    return ids.gather(1, position.unsqueeze(1)).squeeze(1)


def sample(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """(B, V) float32 logits -> (B,) next token ids. Greedy rows take the argmax, the others a draw; in a mixed
    batch each kind only touches its own rows."""
    processed = process_logits(logits, t)
    if t.all_greedy:
        return processed.argmax(dim=-1)
    greedy = (t.temperature == 0).nonzero().flatten().tolist()
    if not greedy:
        return draw_candidates(sampling_candidates(processed, t), t.generators)
    greedy_set = set(greedy)
    sampled = [i for i in range(processed.shape[0]) if i not in greedy_set]
    rows = t.rows(sampled)
    next_ids = torch.empty(processed.shape[0], dtype=torch.long, device=processed.device)
    next_ids[greedy] = processed[greedy].argmax(dim=-1)
    next_ids[sampled] = draw_candidates(sampling_candidates(processed[sampled], rows), rows.generators)
    return next_ids
