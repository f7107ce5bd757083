"""The module tree in a compact, readable form (REFERENCE.md §4): identical layers folded as '24 x', leaves on one line.

```
Qwen2ForCausalLM
  model: Qwen2Model
    embed_tokens: Embedding(151936, 896)
    layers: 24 x Qwen2DecoderLayer
      self_attn: q_proj Linear(896→896, bias) · k_proj Linear(896→128, bias) · ...
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class TreeNode:
    """One module: its attribute name, a short description, how many identical copies it stands for, its children."""

    name: str
    label: str
    repeat: int = 1
    note: str = ""
    children: list[TreeNode] = field(default_factory=list)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "module": self.label}
        if self.repeat > 1:
            d["repeat"] = self.repeat
        if self.note:
            d["note"] = self.note
        if self.children:
            d["children"] = [c.to_dict() for c in self.children]
        return d


def describe(module: nn.Module) -> str:
    """A module in a few characters: Linear(896→128, bias), Embedding(151936, 896), RMSNorm(896), SiLU."""
    if isinstance(module, nn.Linear):
        bias = "bias" if module.bias is not None else "no bias"
        return f"Linear({module.in_features}→{module.out_features}, {bias})"
    if isinstance(module, nn.Embedding):
        return f"Embedding({module.num_embeddings}, {module.embedding_dim})"
    name = type(module).__name__
    if module._modules:
        return name
    weight = getattr(module, "weight", None)
    if isinstance(weight, nn.Parameter) and weight.dim() == 1:
        return f"{name}({weight.shape[0]})"  # norms: their width is the useful fact
    return name


def _signature(module: nn.Module) -> str:
    """Structure and shapes, so that only truly identical layers are folded together."""
    parts = [describe(module)]
    parts += [f"{n}:{_signature(c)}" for n, c in module.named_children()]
    parts += [f"{n}{tuple(p.shape)}" for n, p in module.named_parameters(recurse=False)]
    return "(" + ",".join(parts) + ")"


def build_tree(module: nn.Module, name: str = "", tied: dict[str, str] | None = None, prefix: str = "") -> TreeNode:
    """The TreeNode of `module`. `tied` maps a parameter name to the one it shares storage with (a tied lm_head)."""
    tied = tied or {}
    node = TreeNode(name=name, label=describe(module))
    weight_name = f"{prefix}.weight" if prefix else "weight"
    if weight_name in tied:
        node.note = f"tied to {tied[weight_name].removesuffix('.weight')}"
    for child_name, child in module.named_children():
        child_prefix = f"{prefix}.{child_name}" if prefix else child_name
        if isinstance(child, nn.ModuleList) and len(child) > 0:
            signatures = {_signature(c) for c in child}
            if len(signatures) == 1:
                # All copies have the same structure: show the first one once, as "N x Type".
                inner = build_tree(child[0], child_name, tied, f"{child_prefix}.0")
                inner.repeat = len(child)
                node.children.append(inner)
                continue
        node.children.append(build_tree(child, child_name, tied, child_prefix))
    return node


def leaf_text(node: TreeNode) -> str:
    return f"{node.name} {node.label}" + (f" ({node.note})" if node.note else "")


def node_heading(node: TreeNode) -> str:
    """'layers: 24 x Qwen2DecoderLayer' (the root has no name)."""
    repeat = f"{node.repeat} x " if node.repeat > 1 else ""
    head = f"{node.name}: {repeat}{node.label}" if node.name else node.label
    return head + (f"   ({node.note})" if node.note else "")


def tree_lines(node: TreeNode, indent: int = 0) -> list[str]:
    """Plain text, two spaces per level; a module whose children are all leaves is written on one line."""
    pad = "  " * indent
    if node.children and all(c.is_leaf for c in node.children) and indent > 0:
        return [f"{pad}{node_heading(node) if node.repeat > 1 else node.name}: "
                + " · ".join(leaf_text(c) for c in node.children)]
    lines = [pad + node_heading(node)]
    for child in node.children:
        lines += tree_lines(child, indent + 1)
    return lines
