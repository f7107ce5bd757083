"""The next-token loop, one visible step at a time (REFERENCE.md §3), for `lucid trace`.

Each step runs the model over the whole sequence (no KV cache: the walk-through's way, simple to follow and fine for
a few hundred tokens), takes the last position's logits and lets `lucid.layers.sampler` (the engine's own sampler)
turn them into the next id, so the trace shows exactly the math the server uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lucid.layers import sampler
from lucid.sampling_params import SamplingParams
from lucid.structured.trace_mask import GrammarTrace


@dataclass
class Candidate:
    """One of a step's top tokens. `prob` is softmax(logits); `sampled_prob` is the distribution actually drawn from
    (after temperature, top-k, top-p; a point mass on the argmax at temperature 0)."""

    token_id: int
    text: str
    logit: float
    prob: float
    sampled_prob: float


@dataclass
class TraceStep:
    index: int
    candidates: list[Candidate]
    chosen_id: int
    chosen_text: str
    chosen_logit: float
    chosen_prob: float
    seconds: float
    kept: int              # how many tokens survive temperature / top-k / top-p (sampling can pick any of them)
    draft_id: int | None = None   # with --speculative: the n-gram draft proposed for this position
    drafted: bool = False         # ... and it was kept (this token came from the draft)

    allowed: int | None = None  # with a grammar (--json-schema, --regex, --choice): tokens its mask let through


@dataclass
class Trace:
    prompt_text: str
    prompt_ids: list[int]
    prompt_tokens: list[str]
    params: dict[str, Any]
    steps: list[TraceStep] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"

    @property
    def output_ids(self) -> list[int]:
        return [s.chosen_id for s in self.steps]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"output_ids": self.output_ids}


def sampling_tensors(params: SamplingParams, device: torch.device) -> sampler.SamplingTensors:
    """A one-row SamplingTensors for a resolved SamplingParams (temperature etc. not None)."""
    seeded = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
    temperature = float(params.temperature or 0.0)
    return sampler.SamplingTensors(
        temperature=torch.tensor([temperature], device=device),
        top_k=torch.tensor([params.top_k or 0], dtype=torch.long, device=device),
        top_p=torch.tensor([params.top_p if params.top_p is not None else 1.0], device=device),
        min_p=torch.tensor([params.min_p], device=device),
        repetition_penalty=torch.ones(1, device=device),
        presence_penalty=torch.zeros(1, device=device),
        frequency_penalty=torch.zeros(1, device=device),
        output_counts=None, seen_mask=None, bias=None,
        generators=[seeded],
        all_greedy=temperature == 0.0,
        num_top_logprobs=-1,
    )


def step_distribution(logits: torch.Tensor, t: sampler.SamplingTensors) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, V) logits -> (raw probabilities, the probabilities the next id is drawn from)."""
    raw = logits.softmax(dim=-1)
    processed = sampler.process_logits(logits, t)
    if t.all_greedy:
        return raw, torch.nn.functional.one_hot(processed.argmax(dim=-1), logits.shape[-1]).float()
    return raw, sampler.sampling_probs(processed, t)


@torch.inference_mode()
def trace_steps(model: torch.nn.Module, tokenizer: Any, prompt_ids: list[int], params: SamplingParams,
                steps: int, show: int = 5, stop_ids: list[int] | None = None) -> Iterator[TraceStep]:
    """Generate up to `steps` tokens, yielding each step with its top `show` candidates. Stops after a stop id."""
    device = next(model.parameters()).device
    t = sampling_tensors(params, device)
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)         # (1, T)
    stop = set(stop_ids if stop_ids is not None else tokenizer.eos_token_ids)
    grammar = GrammarTrace(tokenizer, model.config.vocab_size, prompt_ids, params) if params.structured else None
    for index in range(steps):
        started = time.perf_counter()
        logits = model(ids)[:, -1, :]                                          # (1, V) float32, last position
        allowed = grammar.mask(logits) if grammar else None                    # the engine's own mask, in place
        next_id = int(sampler.sample(logits, t)[0])
        raw, drawn = step_distribution(logits, t)
        seconds = time.perf_counter() - started
        top = raw[0].topk(min(show, raw.shape[-1]))
        candidates = [Candidate(int(i), tokenizer.token_text(int(i)), float(logits[0, i]), float(p),
                                float(drawn[0, i])) for p, i in zip(top.values, top.indices, strict=True)]
        yield TraceStep(index=index, candidates=candidates, chosen_id=next_id,
                        chosen_text=tokenizer.token_text(next_id), chosen_logit=float(logits[0, next_id]),
                        chosen_prob=float(raw[0, next_id]), seconds=seconds, kept=int((drawn[0] > 0).sum()),
                        allowed=allowed)
        if grammar:
            grammar.accept(next_id)
        ids = torch.cat([ids, torch.tensor([[next_id]], device=device)], dim=1)  # (1, T + 1): feed it back in
        if next_id in stop:
            return


def prompt_for(tokenizer: Any, prompt: str, system: str | None = None, raw: bool = False) -> str:
    """The text the model actually sees: the chat template around the prompt, or the prompt itself with --raw."""
    if raw:
        return prompt
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)


def new_trace(tokenizer: Any, prompt_text: str, params: SamplingParams, steps: int) -> Trace:
    """Encode the prompt: the trace's header, before any step runs."""
    prompt_ids = tokenizer.encode(prompt_text)
    return Trace(prompt_text=prompt_text, prompt_ids=prompt_ids,
                 prompt_tokens=[tokenizer.token_text(i) for i in prompt_ids],
                 params={"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p,
                         "seed": params.seed, "steps": steps})


def run_trace_loop(model: torch.nn.Module, tokenizer: Any, trace: Trace, params: SamplingParams, show: int = 5,
                   on_step: Callable[[TraceStep], None] | None = None, marker: Any = None) -> Trace:
    """Fill `trace` with its steps; `on_step` is called as each one finishes (the CLI prints it right away);
    `marker` (inspect/trace_spec.DraftMarker) marks speculative drafts."""
    for step in trace_steps(model, tokenizer, trace.prompt_ids, params, trace.params["steps"], show):
        if marker is not None:
            marker.mark(step)
        trace.steps.append(step)
        if on_step is not None:
            on_step(step)
    if trace.steps and trace.steps[-1].chosen_id in set(tokenizer.eos_token_ids):
        trace.finish_reason = "stop"
    trace.text = tokenizer.decode(trace.output_ids, skip_special_tokens=True)
    return trace
