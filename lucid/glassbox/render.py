"""The lens ladder and the attention view in the terminal (`lucid trace --lens / --attention`)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lucid.glassbox.attention import AttentionView
from lucid.glassbox.lens import Lens


def _shown(text: str, limit: int = 16) -> str:
    """A token as Python would write it (whitespace visible), cut short: a run of 30 newlines is one token."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[:limit - 1] + "…"


def print_lens(lens: Lens, console: Console) -> None:
    table = Table(title=f"logit lens for {lens.text!r} (id {lens.token_id}): the final norm and head read after "
                        "each layer", title_justify="left", show_edge=False, padding=(0, 1))
    table.add_column("after")
    table.add_column("top 3")
    table.add_column("rank", justify="right")
    table.add_column("p", justify="right")
    for row in lens.rows:
        tops = "  ".join(f"{_shown(c.text)} {c.prob:.3f}" for c in row.top)
        style = "dim" if row.rough else ("bold green" if row.rank == 1 else "")
        table.add_row(row.label + (" (rough)" if row.rough else ""), tops, str(row.rank), f"{row.prob:.4f}",
                      style=style)
    console.print(table)


def print_attention(view: AttentionView, console: Console, top: int = 3) -> None:
    console.print(Text(f"where position {view.position} looked (heads averaged; {view.num_kv_heads} KV heads × "
                       f"{view.group} query heads)", style="bold"))
    table = Table(show_edge=False, padding=(0, 1))
    table.add_column("layer", justify="right")
    table.add_column(f"top {top} sources: position token weight")
    for layer in view.layers:
        table.add_row(str(layer.layer), "   ".join(f"{s.position} {_shown(s.text)} {s.weight:.3f}"
                                                   for s in layer.top[:top]))
    table.add_row("all", "   ".join(f"{s.position} {_shown(s.text)} {s.weight:.3f}" for s in view.top[:top]),
                  style="bold")
    console.print(table)
