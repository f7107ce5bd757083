"""Where each sequence of a step reads and writes its K/V in the paged pool. Built by the model runner."""

from dataclasses import dataclass, field

import torch


@dataclass
class PrefillChunk:
    """A run of `length` prompt tokens of one sequence, starting at flat index `start` of the step's batch."""

    start: int
    length: int
    context_len: int                       # keys visible to the chunk's last token (earlier tokens + this chunk)
    context_slots: torch.Tensor | None     # (context_len,) pool slots; None when the chunk is the whole context


@dataclass
class AttentionMetadata:
    """The per-step forward context. The flat batch holds the decode tokens first, then the prefill chunks."""

    slot_mapping: torch.Tensor                     # (N,) pool slot where each token's new K/V is written
    num_decode: int = 0                            # decode sequences: one token each, flat indices [0, num_decode)
    decode_slots: torch.Tensor | None = None       # (D, L) pool slots of each decode sequence's context, padded
    decode_mask: torch.Tensor | None = None        # (D, L) True where the slot holds context; None: no padding
    prefills: list[PrefillChunk] = field(default_factory=list)
