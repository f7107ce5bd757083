"""What crosses between the front and the replicas: plain, picklable data (no tensors, no handles)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lucid.config import EngineConfig, ModelConfig
from lucid.engine.outputs import EngineStats, RequestOutput
from lucid.sampling_params import SamplingParams


@dataclass
class ReplicaRequest:
    """One generation request. The prefix router reads `prompt_token_ids` from it (the first positional argument)."""

    prompt_token_ids: list[int]
    params: SamplingParams
    request_id: str


@dataclass
class ReplicaBatch:
    """Some engine outputs of one request, sent together so a stream costs one message per few tokens."""

    replica: str                  # which replica produced them (its Serve replica id)
    outputs: list[RequestOutput] = field(default_factory=list)
    error: ReplicaFailure | None = None


@dataclass
class ReplicaFailure:
    """An engine error, sent as data: Ray would wrap a raised exception, and the front must map the original to its
    HTTP status (429 queue full, 400 context length or bad parameter, 503 engine stopped)."""

    kind: str                     # the lucid.errors class name, or "other"
    message: str
    param: str | None = None


@dataclass
class ReplicaInfo:
    """What the front needs of the model to render and tokenize prompts and validate requests (no weights)."""

    tokenizer: Any
    model_config: ModelConfig
    engine_config: EngineConfig
    generation_config: dict
    model_name: str


@dataclass
class ReplicaSpec:
    """How each replica loads its engine (the arguments of AsyncEngine.from_pretrained)."""

    model: str | None
    engine_config: EngineConfig
    device: str = "cpu"
    dtype: str | None = None
    quantization: str = "none"
    stats_board: Any = None       # the StatsBoard actor the replica posts its engine counters to


def stats_dict(stats: EngineStats) -> dict[str, int]:
    """An engine's counters as Serve routing stats (a dict that Serve ships to every router)."""
    return {"running": stats.num_running, "waiting": stats.num_waiting, "used_blocks": stats.num_used_blocks,
            "total_blocks": stats.num_total_blocks, "preemptions": stats.num_preemptions, "steps": stats.num_steps}
