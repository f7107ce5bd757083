"""Turn a batch of logits into next tokens, each row with its own sampling parameters.

Every rule is a small function on a (B, V) tensor so that tests can check it against its formula.
Order, as OpenAI/vLLM apply it: logit_bias and min_tokens masks, penalties, then greedy argmax or
temperature → top-k → top-p → min-p → draw. Log-probabilities reported to clients come from the raw
logits, before any of this.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


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


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep each row's k largest logits (ties at the k-th value are kept); k = 0 keeps all."""
    vocab = logits.shape[-1]
    k = torch.where(top_k <= 0, vocab, top_k.clamp(max=vocab))
    kth = logits.sort(dim=-1, descending=True).values.gather(1, (k - 1).unsqueeze(1))  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of top tokens whose probability reaches top_p (always at least the top one)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs                        # probability of strictly better tokens
    drop_sorted = mass_before >= top_p.unsqueeze(1)
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the top token's probability."""
    probs = logits.softmax(dim=-1)
    threshold = probs.max(dim=-1, keepdim=True).values * min_p.unsqueeze(1)
    return logits.masked_fill(probs < threshold, NEG_INF)


def draw(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """One token per row. argmax(p / E), E ~ Exp(1), draws from p exactly (the exponential race), and lets a
    seeded row use its own generator so its draw never depends on the other rows of the batch."""
    noise = torch.empty_like(probs)
    unseeded = [i for i, g in enumerate(generators) if g is None]
    if unseeded:
        noise[unseeded] = torch.empty(len(unseeded), probs.shape[1], device=probs.device).exponential_()
    for i, g in enumerate(generators):
        if g is not None:
            noise[i].exponential_(generator=g)
    return (probs / noise).argmax(dim=-1)


def process_logits(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """Bias, masks and penalties: the logits greedy decoding takes the argmax of."""
    logits = apply_bias(logits, t.bias)
    if t.seen_mask is not None:
        logits = apply_repetition_penalty(logits, t.seen_mask, t.repetition_penalty)
    if t.output_counts is not None:
        logits = apply_presence_frequency(logits, t.output_counts, t.presence_penalty, t.frequency_penalty)
    return logits


def sampling_probs(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """Processed logits -> the distribution a non-greedy row draws from (temperature, top-k, top-p, min-p)."""
    temperature = torch.where(t.temperature > 0, t.temperature, 1.0).unsqueeze(1)
    logits = logits / temperature
    if bool((t.top_k > 0).any()):
        logits = apply_top_k(logits, t.top_k)
    if bool((t.top_p < 1).any()):
        logits = apply_top_p(logits, t.top_p)
    if bool((t.min_p > 0).any()):
        logits = apply_min_p(logits, t.min_p)
    return logits.softmax(dim=-1)


def sample(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """(B, V) float32 logits -> (B,) next token ids."""
    processed = process_logits(logits, t)
    greedy_ids = processed.argmax(dim=-1)
    if t.all_greedy:
        return greedy_ids
    sampled = draw(sampling_probs(processed, t), t.generators)
    return torch.where(t.temperature == 0, greedy_ids, sampled)
