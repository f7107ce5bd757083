"""Constrained decoding in the engine, on the tiny random model (its real byte-level BPE tokenizer): a random model
left alone writes garbage, so every valid output here is the mask's doing."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from lucid import LLM, SamplingParams
from lucid.structured import GrammarSpec, StructuredOutputError

SCHEMA = {
    "type": "object",
    "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer", "minimum": 1,
                                                                         "maximum": 9},
                   "ok": {"type": "boolean"}},
    "required": ["unit", "days", "ok"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tiny_llm(tiny_model):
    return LLM(str(tiny_model.hf_dir), dtype="float32")


def _texts(llm: LLM, spec: GrammarSpec, n: int = 1, prompts: list[str] | None = None, **kw) -> list[str]:
    params = SamplingParams(n=n, temperature=1.0, max_tokens=64, structured=spec, **kw)
    outs = llm.generate(prompts or ["def main():"], params)
    return [c.text for out in outs for c in out.outputs]


def test_json_schema_output_validates_for_every_seeded_sample(tiny_llm):
    texts = _texts(tiny_llm, GrammarSpec.json_schema(SCHEMA), n=4, prompts=["x = 1", "import os"], seed=3)
    assert len(texts) == 8
    for text in texts:
        jsonschema.validate(json.loads(text), SCHEMA)


def test_unconstrained_rows_in_the_same_batch_are_untouched(tiny_llm):
    """A constrained and an unconstrained request share steps; greedy output of the free one is as if alone."""
    free = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    alone = tiny_llm.generate(["def main():"], free)[0].outputs[0].token_ids
    engine = tiny_llm.engine
    prompt = tiny_llm.tokenizer.encode("def main():")
    engine.add_request("free", prompt, free)
    engine.add_request("json", prompt, SamplingParams(temperature=0, max_tokens=40,
                                                      structured=GrammarSpec.json_schema(SCHEMA)))
    finals = {}
    while engine.has_unfinished():
        for out in engine.step():
            finals[out.request_id] = out
    assert finals["free"].outputs[0].token_ids == alone
    jsonschema.validate(json.loads(finals["json"].outputs[0].text), SCHEMA)


def test_regex_choice_and_grammar(tiny_llm):
    for text in _texts(tiny_llm, GrammarSpec.regex(r"[a-c]{2}-\d{3}"), n=3):
        assert re.fullmatch(r"[a-c]{2}-\d{3}", text)
    for text in _texts(tiny_llm, GrammarSpec.choice(["yes", "no", "maybe \"so\""]), n=3):
        assert text in ("yes", "no", 'maybe "so"')
    # At most three terms: an unbounded `("+" num)*` lets a random model at temperature 1 run into max_tokens.
    gbnf = 'root ::= "(" num ("+" num)? ("+" num)? ")"\nnum ::= [1-9] [0-9]?'
    for text in _texts(tiny_llm, GrammarSpec.grammar(gbnf), n=3):
        assert re.fullmatch(r"\((?:[1-9][0-9]?)(?:\+[1-9][0-9]?){0,2}\)", text), text


def test_matcher_follows_a_preempted_sequence(tiny_model):
    """With a KV pool too small for all, sequences are preempted and recomputed; each output still parses."""
    # 8 blocks of 16 tokens (512 B of K and V per token in fp32): four ~50-token sequences cannot all fit.
    llm = LLM(str(tiny_model.hf_dir), dtype="float32", kv_cache_memory=8 * 16 * 512, block_size=16)
    spec = GrammarSpec.json_schema({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99},
                                    "minItems": 12, "maxItems": 12})
    texts = _texts(llm, spec, n=4, prompts=["def a(): pass " * 3])
    assert llm.engine.scheduler.num_preemptions > 0
    for text in texts:
        assert len(json.loads(text)) == 12


def test_bad_schema_regex_and_grammar_raise_before_queueing_and_are_cached(tiny_llm):
    engine = tiny_llm.engine
    for spec, words in ((GrammarSpec.json_schema({"type": "strin"}), "strin"),
                        (GrammarSpec.json_schema({"type": "object", "if": {}}), "if"),
                        (GrammarSpec.regex("a(b"), "unclosed group"),
                        (GrammarSpec.grammar("root ::= missing"), "missing")):
        with pytest.raises(StructuredOutputError, match=words):
            engine.prepare_params([1, 2], SamplingParams(structured=spec))
    assert not engine.has_unfinished()
    before = engine.grammars.num_compiled
    spec = GrammarSpec.json_schema(SCHEMA)
    engine.grammars.compile(spec)
    engine.grammars.compile(GrammarSpec.json_schema(json.loads(json.dumps(SCHEMA))))  # an equal schema: a hit
    assert engine.grammars.num_compiled <= before + 1


def test_trace_records_the_allowed_tokens_per_step(tiny_llm):
    decoder = tiny_llm.engine.runner.structured
    decoder.record_allowed = True
    try:
        params = SamplingParams(temperature=0, max_tokens=8, structured=GrammarSpec.choice(["yes", "no"]))
        engine = tiny_llm.engine
        engine.add_request("t", tiny_llm.tokenizer.encode("x"), params)
        seq = engine.requests["t"].completions[0].seq
        counts = []
        while engine.has_unfinished():
            engine.step()
            counts = decoder.allowed_counts(seq) or counts
    finally:
        decoder.record_allowed = False
    vocab = tiny_llm.engine.model_config.vocab_size
    assert counts and 1 <= counts[0] < vocab and counts[-1] >= 1


def test_properties_come_in_the_schema_order(tiny_llm):
    schema = {"type": "object", "properties": {"zeta": {"type": "boolean"}, "alpha": {"type": "boolean"}},
              "required": ["zeta", "alpha"], "additionalProperties": False}
    [text] = _texts(tiny_llm, GrammarSpec.json_schema(schema))
    assert list(json.loads(text)) == ["zeta", "alpha"]
