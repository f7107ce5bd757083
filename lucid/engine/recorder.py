"""What the engine did, step by step, kept only while someone watches (the engine view page polls it).

Closed, it costs one attribute read per step: `LLMEngine.step` checks `recorder.watching` and does nothing else.
Watching lapses by itself `idle_after` seconds after the last poll, so a closed page stops the recording without
telling anyone. Pure Python, no torch: a step's record is the scheduler's decision plus timings.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from lucid.engine.block_manager import BlockManager
from lucid.engine.scheduler import Scheduler, SchedulerOutput


@dataclass
class StepItem:
    request_id: str
    index: int                    # which of the request's n completions
    kind: str                     # "prefill" (a prompt chunk) or "decode"
    tokens: int                   # tokens computed for it in this step
    start: int                    # its first position in this step


@dataclass
class StepRecord:
    step: int                     # the engine's step counter after this step
    time: float                   # wall-clock seconds (time.time()) when the step began
    seconds: float                # schedule + forward + sample + postprocess
    items: list[StepItem]
    waiting: int                  # queue length after the step
    running: int
    preempted: list[str]          # request ids pushed back to the queue to free blocks this step
    used_blocks: int


class StepRecorder:
    def __init__(self, capacity: int = 2000, idle_after: float = 5.0) -> None:
        self.watching = False
        self.idle_after = idle_after
        self._records: deque[tuple[int, StepRecord]] = deque(maxlen=capacity)
        self._ids = itertools.count(1)
        self._until = 0.0

    def watch(self) -> None:
        """Someone looks: record for the next `idle_after` seconds (each poll renews it)."""
        self._until = time.monotonic() + self.idle_after
        self.watching = True

    def record(self, step: int, started_wall: float, seconds: float, sched: SchedulerOutput, scheduler: Scheduler,
               blocks: BlockManager) -> None:
        # Nobody polled for a while before this step began: stop until the next watch(). (Judged at the step's
        # start, so one step longer than idle_after, a long prompt chunk on a slow machine, is still recorded.)
        if time.monotonic() - seconds > self._until:
            self.watching = False
            return
        kinds = [("decode", item) for item in sched.decode] + [("prefill", item) for item in sched.prefill]
        items = [StepItem(item.seq.request_id, item.seq.index, kind, item.num_tokens,
                          item.seq.num_computed_tokens - item.num_tokens) for kind, item in kinds]
        self._records.append((next(self._ids), StepRecord(
            step=step, time=started_wall, seconds=seconds, items=items, waiting=len(scheduler.waiting),
            running=len(scheduler.running), preempted=[s.request_id for s in sched.preempted],
            used_blocks=blocks.num_used_blocks)))

    def since(self, after: int) -> tuple[int, list[dict[str, Any]]]:
        """Records with an id above `after` (oldest first) and the newest id, for incremental polling."""
        records = list(self._records)            # a copy: the engine thread may append meanwhile
        newest = records[-1][0] if records else after
        return newest, [asdict(r) | {"id": i} for i, r in records if i > after]


def pool_snapshot(scheduler: Scheduler, blocks: BlockManager) -> dict[str, Any]:
    """Who holds which KV block: run on the engine thread, between steps, so the tables are consistent."""
    owners: dict[int, list[str]] = {}
    for seq in list(scheduler.running) + list(scheduler.waiting):
        for block_id in seq.block_table:
            owners.setdefault(block_id, []).append(f"{seq.request_id}#{seq.index}")
    used = [{"block": b.block_id, "ref_count": b.ref_count, "owners": owners.get(b.block_id, []),
             "cached": b.hash is not None} for b in blocks.blocks if b.ref_count > 0]
    cached_free = [b for b in blocks.free if blocks.blocks[b].hash is not None]
    return {"num_blocks": blocks.num_blocks, "block_size": blocks.block_size, "used": used,
            "cached_free": cached_free, "num_free": blocks.num_free_blocks}
