"""`lucid trace` for people: the templated prompt, its tokens, then one small table per generated step."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lucid.inspect.trace import Trace, TraceStep


def visible(text: str) -> str:
    """Make whitespace and control characters visible: a token that is just '\\n' must not print as a blank line."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() or text != text.strip() \
        else text


def print_prompt(trace: Trace, console: Console) -> None:
    console.print(Text("1. prompt after the chat template", style="bold"))
    console.print(Text(trace.prompt_text, style="cyan"))
    console.print(Text(f"\n2. tokens ({len(trace.prompt_ids)} ids)", style="bold"))
    table = Table(show_edge=False, box=None, padding=(0, 1))
    table.add_column("#", justify="right", style="dim")
    table.add_column("id", justify="right")
    table.add_column("token")
    for i, (token_id, token) in enumerate(zip(trace.prompt_ids, trace.prompt_tokens, strict=True)):
        table.add_row(str(i), str(token_id), repr(token))
    console.print(table)
    p = trace.params
    console.print(Text(f"\n3. decoding: temperature {p['temperature']}, top_k {p['top_k'] or 'off'}, "
                       f"top_p {p['top_p']}, seed {p['seed']}, up to {p['steps']} steps", style="bold"))


def print_step(step: TraceStep, console: Console) -> None:
    table = Table(title=f"step {step.index + 1}", title_justify="left", show_edge=False, padding=(0, 1))
    table.add_column("id", justify="right")
    table.add_column("token")
    table.add_column("logit", justify="right")
    table.add_column("p", justify="right")
    table.add_column("p after T/top-k/top-p", justify="right")
    for c in step.candidates:
        style = "bold green" if c.token_id == step.chosen_id else ""
        table.add_row(str(c.token_id), repr(c.text), f"{c.logit:.3f}", f"{c.prob:.4f}", f"{c.sampled_prob:.4f}",
                      style=style)
    console.print(table)
    outside = "" if any(c.token_id == step.chosen_id for c in step.candidates) else \
        f" (outside the top {len(step.candidates)}: logit {step.chosen_logit:.3f}, p {step.chosen_prob:.4f})"
    how = "greedy: the argmax" if step.kept == 1 and step.candidates[0].sampled_prob == 1.0 and \
        step.candidates[0].token_id == step.chosen_id else f"drawn from {step.kept:,} kept tokens"
    if step.allowed is not None:
        how = f"grammar allowed {step.allowed:,} tokens; {how}"
    console.print(Text("→ chose ") + Text(f"{step.chosen_id} {step.chosen_text!r}", style="bold green")
                  + Text(f"{outside}   {how}   {step.seconds * 1000:.0f} ms", style="dim"))
    if step.draft_id is not None:
        console.print(Text("  ⚡ drafted by n-gram lookup, kept", style="bold cyan") if step.drafted else
                      Text(f"  n-gram draft {step.draft_id} rejected", style="dim cyan"))


def print_summary(trace: Trace, console: Console) -> None:
    total = sum(s.seconds for s in trace.steps)
    console.print(Text(f"\n4. output ({len(trace.steps)} tokens, {trace.finish_reason}, {total:.2f}s)", style="bold"))
    console.print(Text(f"ids: {trace.output_ids}", style="dim"))
    console.print(trace.text)
