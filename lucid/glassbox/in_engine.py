"""The probe inside a running engine, between two steps (on the engine thread).

The sequence up to the probed position P is admitted like a request: its prefix comes from the prefix cache where
the pool still holds it. The rest is computed the way the engine computed it in the first place — prompt positions
as a prefill chunk, generated positions one decode step at a time — and P itself as a decode step, twice: once
through the eager model with the probe's hooks (the residuals and the attention), once through the engine's own
step path (the fused C++ step when it runs), whose final hidden state gives the lens's last row the very numbers
the engine sampled from. Then the blocks go back: nothing else is disturbed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lucid.engine.llm_engine import LLMEngine
from lucid.engine.scheduler import ScheduledSeq, SchedulerOutput
from lucid.engine.sequence import Sequence
from lucid.errors import LucidError
from lucid.glassbox.probe import Probe, probe_last_position
from lucid.sampling_params import SamplingParams


class PoolBusyError(LucidError):
    """The KV pool has no room for the probe right now."""


@dataclass
class EngineProbe:
    probe: Probe
    final_hidden: torch.Tensor    # (hidden,) P's normed last hidden state from the engine's own step path
    reused_tokens: int            # positions whose K/V came from the prefix cache
    computed_tokens: int          # positions computed for the probe


def probe_in_engine(engine: LLMEngine, token_ids: list[int], prompt_len: int | None = None) -> EngineProbe:
    """Probe the last position of `token_ids`; positions from `prompt_len` on were generated (decoded one by one)."""
    prompt_len = len(token_ids) if prompt_len is None else prompt_len
    last = len(token_ids) - 1
    seq = Sequence("glassbox-probe", 0, token_ids, SamplingParams(max_tokens=1))
    blocks, runner = engine.blocks, engine.runner
    if not blocks.can_admit(seq, len(token_ids)):
        raise PoolBusyError("the KV pool is full right now; try again when fewer requests run")
    reused = blocks.admit(seq)
    try:
        if not blocks.allocate(seq, len(token_ids)):
            raise PoolBusyError("the KV pool is full right now; try again when fewer requests run")
        prefill = min(prompt_len, last) - seq.num_computed_tokens
        if prefill > 0:
            _compute(engine, SchedulerOutput(prefill=[ScheduledSeq(seq, prefill)]))
        while seq.num_computed_tokens < last:
            _compute(engine, SchedulerOutput(decode=[ScheduledSeq(seq, 1)]))
        step = SchedulerOutput(decode=[ScheduledSeq(seq, 1)])
        ids, positions, meta = runner.prepare(step)
        context = torch.tensor([blocks.slot(seq, p) for p in range(len(token_ids))], device=runner.device)
        probe, final = probe_last_position(engine.model, ids, positions, meta, context)
        # The engine's own path for this step (ModelRunner.run's first lines; called here rather than changing the
        # runner): the fused step when it runs, else the eager pass above already was that path.
        if runner._fused_fits(step):
            final = runner._fused_forward(step.all)[-1]
    finally:
        blocks.release(seq)
    return EngineProbe(probe, final.float(), reused, len(token_ids) - reused)


def _compute(engine: LLMEngine, sched: SchedulerOutput) -> None:
    """Fill the pool for the scheduled positions with the engine's step path (nothing is sampled: none of them
    reaches the sequence's last token)."""
    engine.runner.run(sched, engine.eos_ids)
    for item in sched.all:
        item.seq.num_computed_tokens += item.num_tokens
