"""`lucid inspect` for people: the report as rich tables and a tree."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from lucid.inspect.report import InspectReport
from lucid.inspect.tensors import TensorSummary
from lucid.inspect.tree import TreeNode, leaf_text, node_heading


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _add_children(branch: Tree, node: TreeNode) -> None:
    for child in node.children:
        if child.children and all(c.is_leaf for c in child.children):
            # A block of leaves (self_attn, mlp) reads best as one labelled list, like the walk-through's.
            sub = branch.add(Text(node_heading(child), style="bold"))
            for leaf in child.children:
                sub.add(Text(leaf_text(leaf)))
        elif child.children:
            _add_children(branch.add(Text(node_heading(child), style="bold")), child)
        else:
            branch.add(Text(node_heading(child)))


def module_tree(report: InspectReport) -> Tree:
    tree = Tree(Text(node_heading(report.tree), style="bold cyan"))
    _add_children(tree, report.tree)
    return tree


def params_table(report: InspectReport) -> Table:
    p = report.params
    table = Table(title="Parameters (unique, tie-aware)", title_justify="left", show_edge=False)
    table.add_column("part")
    table.add_column("formula", style="dim")
    table.add_column("count", justify="right")
    table.add_column("", style="yellow")
    for part in p.layer_parts:
        table.add_row(f"  {part.name}", part.formula, f"{part.count:,}")
    table.add_row(Text("one decoder layer", style="bold"), "", Text(f"{p.per_layer:,}", style="bold"))
    table.add_row(Text(f"{p.num_layers} layers ({p.layers_name})", style="bold"), f"{p.num_layers} × {p.per_layer:,}",
                  Text(f"{p.layers_total:,}", style="bold"), end_section=True)
    for part in p.other_parts:
        table.add_row(part.name, part.formula, f"{part.count:,}", part.note)
    table.add_row(Text("total", style="bold green"), "", Text(f"{p.total:,}", style="bold green"))
    return table


def bytes_table(report: InspectReport) -> Table:
    table = Table(title="Memory", title_justify="left", show_edge=False)
    table.add_column("what")
    table.add_column("how", style="dim")
    table.add_column("bytes", justify="right")
    table.add_column("", justify="right", style="dim")
    total = report.params.total
    for dtype, n in report.bytes_by_dtype.items():
        table.add_row(f"weights in {dtype}", f"{total:,} × {n // total if total else 0}", f"{n:,}", human_bytes(n))
    if report.source == "weights":
        n = report.loaded_bytes
        table.add_row("weights as loaded", report.dtype, f"{n:,}", human_bytes(n))
    for s in report.stored:
        tensors = f"{s.tensors} tensor" + ("s" if s.tensors != 1 else "")
        table.add_row(f"stored {s.name}", f"{tensors}, {s.bits_per_weight:.2f} bits/weight", f"{s.bytes:,}",
                      human_bytes(s.bytes))
    if report.stored:
        table.add_row("stored, all tensors", "as in the file", f"{report.stored_bytes:,}",
                      human_bytes(report.stored_bytes))
    c = report.config
    bytes_per = report.kv_bytes_per_token // (2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim)
    table.add_row(f"KV cache per token ({report.dtype})",
                  f"2 × {c.num_hidden_layers} layers × {c.num_key_value_heads} kv heads × {c.head_dim} × {bytes_per} B",
                  f"{report.kv_bytes_per_token:,}", human_bytes(report.kv_bytes_per_token))
    return table


def print_report(report: InspectReport, console: Console | None = None) -> None:
    console = console or Console()
    console.print(Text(f"{report.name}  ", style="bold") + Text(f"from {report.source}", style="dim"))
    console.print(module_tree(report))
    console.print()
    console.print(params_table(report))
    console.print()
    console.print(bytes_table(report))
    for note in report.notes:
        console.print(Text("note: ", style="yellow") + Text(note))


def print_tensor(summary: TensorSummary, console: Console | None = None) -> None:
    console = console or Console()
    head = Text(summary.name, style="bold") + Text(f"  {summary.dtype}  shape {summary.shape}  "
                                                   f"({summary.numel:,} values)", style="")
    if summary.stored_format:
        head += Text(f"  stored as {summary.stored_format}", style="dim")
    parts: list = [head]
    if summary.min is None:
        parts.append(Text("no values: built from a config on the meta device (give --model to see weights)",
                          style="dim"))
    else:
        parts.append(Text(f"min {summary.min:.6g}   max {summary.max:.6g}   mean {summary.mean:.6g}   "
                          f"std {summary.std:.6g}"))
        corner = Table(show_header=False, show_edge=False, box=None, padding=(0, 1))
        rows = summary.corner or []
        more_cols = len(summary.shape) > 1 and summary.shape[-1] > len(rows[0] if rows else [])
        for row in rows:
            corner.add_row(*[f"{v: .4f}" for v in row], *(["…"] if more_cols else []))
        if len(summary.shape) > 1 and summary.shape[0] > len(rows):
            corner.add_row(*["⋮"] * (len(rows[0]) if rows else 1))
        parts += [Text("top-left corner:", style="dim"), corner]
    console.print(Group(*parts))
