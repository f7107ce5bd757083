"""The probe inside a running engine, between two steps (on the engine thread): the sequence up to the probed
position is admitted like a request — its prefix comes from the prefix cache where the pool still holds it, only the
rest is computed — run through the runner's own batch builder, then released. Nothing else is disturbed: its blocks
are taken from the free list and given back."""

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
    reused_tokens: int            # positions whose K/V came from the prefix cache
    computed_tokens: int          # positions computed for the probe


def probe_in_engine(engine: LLMEngine, token_ids: list[int]) -> EngineProbe:
    """Probe the last position of `token_ids` with the engine's model, pool and batch builder."""
    seq = Sequence("glassbox-probe", 0, token_ids, SamplingParams(max_tokens=1))
    blocks, runner = engine.blocks, engine.runner
    if not blocks.can_admit(seq, len(token_ids)):
        raise PoolBusyError("the KV pool is full right now; try again when fewer requests run")
    reused = blocks.admit(seq)
    try:
        if not blocks.allocate(seq, len(token_ids)):
            raise PoolBusyError("the KV pool is full right now; try again when fewer requests run")
        sched = SchedulerOutput(prefill=[ScheduledSeq(seq, len(token_ids) - reused)])
        ids, positions, meta = runner.prepare(sched)
        context = torch.tensor([blocks.slot(seq, p) for p in range(len(token_ids))], device=runner.device)
        probe = probe_last_position(engine.model, ids, positions, meta, context)
    finally:
        blocks.release(seq)
    return EngineProbe(probe, reused, len(token_ids) - reused)
