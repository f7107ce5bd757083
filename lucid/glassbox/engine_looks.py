"""The glass box's looks inside a running engine, as plain functions of the engine: the server sends them (with
functools.partial for their arguments) to run between two steps, in its own process or, pickled, in the engine's
(lucid.engine.engine_process). They return plain data."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from lucid.engine.recorder import pool_snapshot

if TYPE_CHECKING:
    from lucid.engine.llm_engine import LLMEngine


def explain_token(engine: LLMEngine, ids: list[int], prompt_len: int, top: int) -> dict[str, Any]:
    """Probe the position before the last token, read the lens and the attention of the query that chose it."""
    from lucid.glassbox.attention import read_attention
    from lucid.glassbox.in_engine import probe_in_engine
    from lucid.glassbox.lens import read_lens

    got = probe_in_engine(engine, ids[:-1], prompt_len)
    text = engine.tokenizer.token_text
    lens = read_lens(engine.model, engine.tokenizer, got.probe.residuals, ids[-1], len(ids) - 1, top,
                     got.probe.norm)
    attention = read_attention(got.probe.attention, [text(t) for t in ids[:-1]],
                               engine.model_config.num_key_value_heads)
    return {"token_ids": ids, "position": len(ids) - 1, "reused_tokens": got.reused_tokens,
            "computed_tokens": got.computed_tokens, "lens": lens.to_dict(), "attention": attention.to_dict()}


def engine_view(engine: LLMEngine, after: int) -> dict[str, Any]:
    """Steps recorded since step record `after`, the KV pool now and the counters; keeps the recorder on."""
    engine.recorder.watch()
    newest, steps = engine.recorder.since(after)
    return {"last": newest, "steps": steps, "pool": pool_snapshot(engine.scheduler, engine.blocks),
            "stats": asdict(engine.stats())}
