"""The logit lens: read each layer's residual stream as if it were the last one — the final norm, then the head
(tuned-lens's `Unembed` does the same) — to see when the prediction formed. One batched head pass for all rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

# Layers whose lens reading is known to be rough: the residual stream there is not yet in the head's basis
# (nostalgebraist's logit lens; tuned-lens trains per-layer translators for this reason).
ROUGH_FRACTION = 1 / 3


@dataclass
class LensCandidate:
    token_id: int
    text: str
    prob: float


@dataclass
class LensRow:
    label: str                    # "embedding", "layer 1" … "layer N"
    top: list[LensCandidate]      # the top tokens of this reading
    rank: int                     # the chosen token's rank here (1 = top)
    prob: float                   # the chosen token's probability here
    rough: bool                   # early layer: read with care


@dataclass
class Lens:
    token_id: int
    text: str
    position: int                 # index of the token in the sequence (predicted from position - 1)
    rows: list[LensRow]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Norm = Callable[[torch.Tensor], torch.Tensor]


@torch.inference_mode()
def lens_logits(model: torch.nn.Module, residuals: torch.Tensor, norm: Norm | None = None) -> torch.Tensor:
    """(rows, hidden) residuals -> (rows, vocab) float32 logits through the final norm and the head. `norm` is the
    final norm of the forward the residuals came from (the fused step's own, in float32, when it ran: the last
    row then gives bit for bit the logits the engine sampled from); None: the model's, in its weights' dtype."""
    if norm is None:
        normed = model.model.norm(residuals.to(model.model.norm.weight.dtype))
    else:
        normed = norm(residuals)
    return model.compute_logits(normed)


@torch.inference_mode()
def read_lens(model: torch.nn.Module, tokenizer: Any, residuals: torch.Tensor, token_id: int, position: int,
              top: int = 3, norm: Norm | None = None) -> Lens:
    """The ladder: one row per residual (embedding, then each layer), each with its top tokens and the chosen
    token's rank and probability; `norm` as in `lens_logits`."""
    logits = lens_logits(model, residuals, norm)                                # (rows, vocab)
    probs = logits.softmax(dim=-1)                                              # (rows, vocab)
    chosen = probs[:, token_id]                                                 # (rows,)
    ranks = (probs > chosen.unsqueeze(1)).sum(dim=-1) + 1                       # (rows,)
    top_p, top_ids = probs.topk(top, dim=-1)                                    # (rows, top)
    layers = residuals.shape[0] - 1
    rows = []
    for i in range(residuals.shape[0]):
        candidates = [LensCandidate(int(t), tokenizer.token_text(int(t)), float(p))
                      for t, p in zip(top_ids[i].tolist(), top_p[i].tolist(), strict=True)]
        rows.append(LensRow(label="embedding" if i == 0 else f"layer {i}", top=candidates, rank=int(ranks[i]),
                            prob=float(chosen[i]), rough=i < max(1, round(layers * ROUGH_FRACTION))))
    return Lens(token_id=token_id, text=tokenizer.token_text(token_id), position=position, rows=rows)
