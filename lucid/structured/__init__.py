"""Constrained decoding and tool calls: grammars compiled once per spec (llguidance), one matcher per sequence,
the batch's token mask built once per step, and the tool-call parsers of each model family.

Only `spec` is imported by the bookkeeping (SamplingParams carries a GrammarSpec); the grammar engine is imported
where masks are built.
"""

from lucid.structured.spec import GrammarSpec, StructuredOutputError

__all__ = ["GrammarSpec", "StructuredOutputError"]
