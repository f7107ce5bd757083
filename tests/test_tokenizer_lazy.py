"""The lazily built backend of a GGUF byte-level tokenizer (lucid.tokenizer.lazy_backend): before it is built it
answers exactly what the real backend would for the lookups the engine makes; anything else builds the real one,
once, and from then on both are one tokenizer."""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from lucid.errors import ModelLoadError
from lucid.loader import gguf_checkpoint as gguf_checkpoint_module
from lucid.loader import read_checkpoint
from lucid.testing import TinyModel
from lucid.tokenizer import Tokenizer
from lucid.tokenizer import lazy_backend as lazy_backend_module
from lucid.tokenizer.lazy_backend import LazyByteLevelBackend
from lucid.tokenizer.tiny import tiny_gguf_fields

pytestmark = pytest.mark.timeout(120)

SAMPLES = ["hello 你好 😀", "<|im_start|>user\nhi<|im_end|>\n", "<tool_call>{}</tool_call>", "def f(x):\n  return x\n"]


def is_built(tokenizer: Tokenizer) -> bool:
    backend = tokenizer._backend
    return not isinstance(backend, LazyByteLevelBackend) or backend.is_built


def assert_same_lookups(lazy: Tokenizer, eager: Tokenizer) -> None:
    """What the engine reads from a tokenizer: the answers must match."""
    assert (lazy.vocab_size, lazy.special_token_ids, lazy.eos_token_ids) == \
        (eager.vocab_size, eager.special_token_ids, eager.eos_token_ids)
    assert (lazy.bos_token_id, lazy.eos_token_id, lazy.pad_token_id, lazy.adds_bos, lazy.chat_template) == \
        (eager.bos_token_id, eager.eos_token_id, eager.pad_token_id, eager.adds_bos, eager.chat_template)
    ids = range(eager.vocab_size + 3)  # and ids past the vocabulary (a model's padded rows)
    assert [lazy.id_to_token(i) for i in ids] == [eager.id_to_token(i) for i in ids]
    assert [lazy.token_bytes(i) for i in ids] == [eager.token_bytes(i) for i in ids]
    assert [lazy.token_text(i) for i in ids] == [eager.token_text(i) for i in ids]
    tokens = [*(eager.id_to_token(i) for i in range(eager.vocab_size)), "no such token"]
    assert [lazy.token_id(t) for t in tokens] == [eager.token_id(t) for t in tokens]
    added = {i: (t.content, t.special) for i, t in eager._backend.get_added_tokens_decoder().items()}
    assert {i: (t.content, t.special) for i, t in lazy._backend.get_added_tokens_decoder().items()} == added
    detok = lazy.detokenizer()
    text = "".join(detok.add(i) for i in eager.encode(SAMPLES[0] + SAMPLES[1]))
    assert text + detok.flush() == eager.decode(eager.encode(SAMPLES[0] + SAMPLES[1]))


def assert_same_encoding(a: Tokenizer, b: Tokenizer) -> None:
    for text in SAMPLES:
        assert a.encode(text) == b.encode(text), text
        assert a.encode_text(text) == b.encode_text(text), text
        assert a.encode_prompt(text) == b.encode_prompt(text), text
        ids = b.encode(text)
        assert a.decode(ids) == b.decode(ids) and a.decode(ids, False) == b.decode(ids, False)


@pytest.fixture
def fields() -> dict[str, Any]:
    return dict(tiny_gguf_fields())


def test_a_lazy_tokenizer_answers_lookups_as_the_built_one_without_building(fields: dict[str, Any]) -> None:
    lazy = Tokenizer.from_gguf_fields(fields, "tiny.gguf", lazy=True)
    eager = Tokenizer.from_gguf_fields(fields, "tiny.gguf")
    assert isinstance(lazy._backend, LazyByteLevelBackend) and not isinstance(eager._backend, LazyByteLevelBackend)
    assert_same_lookups(lazy, eager)
    assert not is_built(lazy), "a lookup built the BPE"
    assert_same_encoding(lazy, eager)
    assert is_built(lazy)
    assert lazy._backend.encode_special_tokens is False  # encode_text switched the real backend, and back
    assert_same_lookups(eager, lazy)  # after the build the answers come from the real backend: still the same


def test_a_lazy_tokenizer_with_a_bos_encodes_as_the_eager_one(fields: dict[str, Any]) -> None:
    fields = {**fields, "tokenizer.ggml.add_bos_token": True}
    lazy = Tokenizer.from_gguf_fields(fields, "bos.gguf", lazy=True)
    eager = Tokenizer.from_gguf_fields(fields, "bos.gguf")
    assert lazy.encode_prompt("hi")[0] == fields["tokenizer.ggml.bos_token_id"]
    assert_same_encoding(lazy, eager)


def test_the_first_uses_from_many_threads_build_once(fields: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []
    real_build = lazy_backend_module.build_backend

    def counted_build(*args: Any) -> Any:
        builds.append(1)
        time.sleep(0.05)  # a slow build (the real one takes ~0.25 s): the other threads arrive meanwhile
        return real_build(*args)

    monkeypatch.setattr(lazy_backend_module, "build_backend", counted_build)
    lazy = Tokenizer.from_gguf_fields(fields, "tiny.gguf", lazy=True)
    eager = Tokenizer.from_gguf_fields(fields, "tiny.gguf")
    ids = eager.encode(SAMPLES[1])
    start = threading.Barrier(8)
    results: list[object] = []

    # decode and prepare take no lock of the Tokenizer's own (encode does): only the backend's keeps them apart
    def first_use(use: str) -> None:
        start.wait()
        results.append(lazy.decode(ids, False) if use == "decode" else lazy.prepare())

    threads = [threading.Thread(target=first_use, args=(use,)) for use in ["decode", "prepare"] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 8 and [r for r in results if r is not None] == [eager.decode(ids, False)] * 4
    assert len(builds) == 1
    assert lazy.encode(SAMPLES[1]) == ids and len(builds) == 1


def test_a_lazy_tokenizer_pickles_unbuilt_and_built(fields: dict[str, Any]) -> None:
    eager = Tokenizer.from_gguf_fields(fields, "tiny.gguf")
    lazy = Tokenizer.from_gguf_fields(fields, "tiny.gguf", lazy=True)
    copy = pickle.loads(pickle.dumps(lazy))
    assert_same_lookups(copy, eager)
    assert not is_built(copy)
    assert_same_encoding(copy, eager)

    lazy.prepare()
    built_copy = pickle.loads(pickle.dumps(lazy))
    assert is_built(built_copy) and built_copy._backend._fields == {}  # the real backend travels, not the fields
    assert_same_encoding(built_copy, eager)
    assert_same_lookups(eager, built_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokenizer.ggml.pre": "no-such-pre"}, "unsupported tokenizer.ggml.pre"),
        ({"tokenizer.ggml.merges": ["nospace"]}, "malformed merge"),
        ({"tokenizer.ggml.merges": ["nosuch token"]}, "cannot be built"),  # the tokenizers library's own error
    ],
)
def test_bad_fields_fail_at_prepare(fields: dict[str, Any], change: dict[str, Any], message: str) -> None:
    lazy = Tokenizer.from_gguf_fields({**fields, **change}, "bad.gguf", lazy=True)
    for _ in range(2):  # and again: a failed build is not half-kept
        with pytest.raises(ModelLoadError, match=f"bad.gguf: .*{message}"):
            lazy.prepare()
    with pytest.raises(ModelLoadError, match=message):
        lazy.encode("hi")


def test_duplicate_tokens_fail_at_prepare(fields: dict[str, Any]) -> None:
    tokens = list(fields["tokenizer.ggml.tokens"])
    tokens[1] = tokens[0]
    lazy = Tokenizer.from_gguf_fields({**fields, "tokenizer.ggml.tokens": tokens}, "dup.gguf", lazy=True)
    with pytest.raises(ModelLoadError, match="dup.gguf: .*duplicate"):
        lazy.prepare()


@pytest.mark.parametrize("change", [{"tokenizer.ggml.model": "bert"}, {"tokenizer.ggml.tokens": []}])
def test_only_usable_byte_level_fields_are_lazy(fields: dict[str, Any], change: dict[str, Any]) -> None:
    with pytest.raises(ModelLoadError):  # built (and failing) at once, as without `lazy`
        Tokenizer.from_gguf_fields({**fields, **change}, "bad.gguf", lazy=True)


def test_prepare_does_nothing_to_an_eager_tokenizer(fields: dict[str, Any]) -> None:
    eager = Tokenizer.from_gguf_fields(fields, "tiny.gguf")
    backend = eager._backend
    eager.prepare()
    assert eager._backend is backend


def test_the_loader_prepares_unless_asked_not_to(tiny_model: TinyModel) -> None:
    assert is_built(read_checkpoint(tiny_model.gguf_path, torch.float32).tokenizer)
    lazy = read_checkpoint(tiny_model.gguf_path, torch.float32, prepare_tokenizer=False).tokenizer
    assert isinstance(lazy._backend, LazyByteLevelBackend) and not is_built(lazy)
    assert is_built(read_checkpoint(tiny_model.hf_dir, torch.float32, prepare_tokenizer=False).tokenizer)


def test_a_gguf_with_a_broken_tokenizer_fails_at_load(tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch) -> None:
    contents = gguf_checkpoint_module.read_gguf(tiny_model.gguf_path, torch.float32)
    contents.tokenizer_fields = {**contents.tokenizer_fields, "tokenizer.ggml.merges": ["nospace"]}
    monkeypatch.setattr(gguf_checkpoint_module, "read_gguf", lambda *args: contents)
    with pytest.raises(ModelLoadError, match=f"{tiny_model.gguf_path}: malformed merge"):
        read_checkpoint(tiny_model.gguf_path, torch.float32)
    unprepared = read_checkpoint(tiny_model.gguf_path, torch.float32, prepare_tokenizer=False).tokenizer
    with pytest.raises(ModelLoadError, match=f"{tiny_model.gguf_path}: malformed merge"):
        unprepared.prepare()


def _run(engine: Any, request_id: str, prompt: list[int], params: Any) -> Any:
    engine.add_request(request_id, prompt, params)
    final = None
    while engine.has_unfinished():
        for out in engine.step():
            final = out
    return final.outputs[0]


def test_an_engine_without_a_prepared_tokenizer_decodes_unbuilt_and_builds_for_grammars(tiny_model: TinyModel) -> None:
    """The engine process: detokenizing needs no BPE; structured output builds it on first use."""
    from lucid.engine.llm_engine import LLMEngine
    from lucid.sampling_params import SamplingParams
    from lucid.structured import GrammarSpec

    prepared = LLMEngine.from_pretrained(str(tiny_model.gguf_path), dtype="float32")
    engine = LLMEngine.from_pretrained(str(tiny_model.gguf_path), dtype="float32", prepare_tokenizer=False)
    assert is_built(prepared.tokenizer) and not is_built(engine.tokenizer)
    prompt = prepared.tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n")
    greedy = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=2)
    expected = _run(prepared, "a", prompt, greedy)
    got = _run(engine, "a", prompt, greedy)
    assert (got.token_ids, got.text) == (expected.token_ids, expected.text) and got.text
    assert [(lp.token, [t.token for t in lp.top]) for lp in got.logprobs] == \
        [(lp.token, [t.token for t in lp.top]) for lp in expected.logprobs]
    assert not is_built(engine.tokenizer)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    structured = SamplingParams(temperature=0, max_tokens=24, structured=GrammarSpec.json_schema(schema))
    assert _run(engine, "b", prompt, structured).text == _run(prepared, "b", prompt, structured).text
    assert is_built(engine.tokenizer)


@pytest.mark.slow
def test_the_real_lazy_tokenizer_matches_the_eager_one(real_gguf_path: Path) -> None:
    lazy = read_checkpoint(None, torch.bfloat16, prepare_tokenizer=False).tokenizer
    eager = Tokenizer.from_gguf_fields(lazy._backend._fields, str(real_gguf_path))
    assert_same_lookups(lazy, eager)
    assert not is_built(lazy), "a lookup built the BPE"
    assert_same_encoding(lazy, eager)
    fim = "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n<|fim_middle|>"
    assert lazy.encode(fim) == eager.encode(fim) and lazy.encode_text(fim) == eager.encode_text(fim)


@pytest.mark.slow
def test_a_pulled_byte_level_model_is_lazy_and_matches_the_eager_tokenizer() -> None:
    """SmolLM2: another pre-tokenizer ('smollm'), a 49k vocabulary."""
    from lucid.loader import pull

    pull("smollm2-135m-instruct", progress=False)
    lazy = read_checkpoint("smollm2-135m-instruct", torch.bfloat16, prepare_tokenizer=False).tokenizer
    eager = Tokenizer.from_gguf_fields(lazy._backend._fields, lazy.source)
    assert_same_lookups(lazy, eager)
    assert not is_built(lazy), "a lookup built the BPE"
    assert_same_encoding(lazy, eager)
