"""The probe inside a running engine, between two steps (on the engine thread).

The sequence up to the probed position P is admitted like a request: its prefix comes from the prefix cache where
the pool still holds it, and the rest is computed by the engine's own step path, P's step tapped:
- the fused C++ step (the default on CPU): the uncached positions in steps of the engine's size, the last step
  tapped at P (`ModelRunner.fused_forward_tapped`). The fused step gives each row the arithmetic of its kind alone
  (a prompt position a chunk row's, a generated one a decode row's), whatever else shares the step, so the K/V of
  the recomputed positions and P's residuals are bit for bit those of the steps that generated the tokens, and the
  lens's last row (the fused step's final norm, then the head) is exactly the distribution that was sampled from.
- the eager model: prompt positions as a prefill chunk, generated ones one decode step at a time, as the engine
  computed them, P's step read through forward hooks.
Then the blocks go back: nothing else is disturbed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lucid.engine.llm_engine import LLMEngine
from lucid.engine.scheduler import ScheduledSeq, SchedulerOutput
from lucid.engine.sequence import Sequence
from lucid.errors import PoolBusyError
from lucid.glassbox.probe import Probe, attention_over_pool, probe_last_position
from lucid.sampling_params import SamplingParams


@dataclass
class EngineProbe:
    probe: Probe
    reused_tokens: int            # positions whose K/V came from the prefix cache
    computed_tokens: int          # positions computed for the probe


def probe_in_engine(engine: LLMEngine, token_ids: list[int], prompt_len: int | None = None) -> EngineProbe:
    """Probe the last position of `token_ids`; positions from `prompt_len` on were generated (decoded one by one)."""
    prompt_len = len(token_ids) if prompt_len is None else min(prompt_len, len(token_ids))
    seq = Sequence("glassbox-probe", 0, token_ids[:prompt_len], SamplingParams(max_tokens=1))
    for token in token_ids[prompt_len:]:
        seq.append_token(token)
    blocks = engine.blocks
    if not blocks.can_admit(seq, len(token_ids)):
        raise PoolBusyError("the KV pool is full right now; try again when fewer requests run")
    reused = blocks.admit(seq)
    try:
        if not blocks.allocate(seq, len(token_ids)):
            raise PoolBusyError("the KV pool is full right now; try again when fewer requests run")
        probe = _probe_fused(engine, seq) if engine.runner.fused_decoder is not None else _probe_eager(engine, seq)
    finally:
        blocks.release(seq)
    return EngineProbe(probe, reused, len(token_ids) - reused)


def _probe_fused(engine: LLMEngine, seq: Sequence) -> Probe:
    runner = engine.runner
    while seq.num_uncomputed_tokens:    # steps of the engine's size; the taps of the last one, which ends at P
        n = min(engine.engine_config.max_num_batched_tokens, seq.num_uncomputed_tokens)
        _, residuals, queries = runner.fused_forward_tapped([ScheduledSeq(seq, n)])
        seq.num_computed_tokens += n
    attention = attention_over_pool(engine.model, queries, _context_slots(engine, seq))
    return Probe(residuals=residuals, attention=attention, norm=runner.fused_decoder.final_norm)


def _probe_eager(engine: LLMEngine, seq: Sequence) -> Probe:
    last, prompt_len = seq.num_tokens - 1, seq.num_prompt_tokens
    if last < prompt_len:    # P is a prompt position: the last row of the prompt's chunk
        step = SchedulerOutput(prefill=[ScheduledSeq(seq, seq.num_uncomputed_tokens)])
    else:                    # P was generated: the prompt as a chunk, then one decode step per token
        if prompt_len > seq.num_computed_tokens:
            _compute(engine, SchedulerOutput(prefill=[ScheduledSeq(seq, prompt_len - seq.num_computed_tokens)]))
        while seq.num_computed_tokens < last:
            _compute(engine, SchedulerOutput(decode=[ScheduledSeq(seq, 1)]))
        step = SchedulerOutput(decode=[ScheduledSeq(seq, 1)])
    ids, positions, meta = engine.runner.prepare(step)
    return probe_last_position(engine.model, ids, positions, meta, _context_slots(engine, seq))


def _context_slots(engine: LLMEngine, seq: Sequence) -> torch.Tensor:
    """The pool slots of positions 0..P."""
    return torch.tensor([engine.blocks.slot(seq, p) for p in range(seq.num_tokens)], device=engine.runner.device)


def _compute(engine: LLMEngine, sched: SchedulerOutput) -> None:
    """Fill the pool for the scheduled positions with the engine's step path (nothing is sampled: none of them
    reaches the sequence's last token)."""
    engine.runner.run(sched, engine.eos_ids)
    for item in sched.all:
        item.seq.num_computed_tokens += item.num_tokens
