"""Gated feed-forward: down(act(gate(x)) * up(x)); SiLU (SwiGLU: Qwen, Llama) or tanh-approximated GELU (Gemma)."""

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
}


class GatedMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "silu") -> None:
        super().__init__()
        if hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden activation {hidden_act!r}; lucid knows {', '.join(_ACTIVATIONS)}")
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.act_fn = _ACTIVATIONS[hidden_act]()
        # Serving fuses gate and up into one matmul at load time (lucid.fusion); None keeps the HF modules.
        self.gate_up_proj: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        if isinstance(self.act_fn, nn.SiLU):
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(self.act_fn(gate) * up)


class Qwen2MLP(GatedMLP):
    """SwiGLU, as Qwen2 names it."""
