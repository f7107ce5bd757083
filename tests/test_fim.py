"""Fill-in-the-middle prompts (lucid.server.fim), llama.cpp's editor limits and the Ollama option mapping: fast
unit tests on the tiny tokenizer with Qwen2.5-Coder's FIM tokens appended (as control tokens, as Qwen has them),
plus one check of the real model's token layout (slow: it reads the GGUF)."""

from __future__ import annotations

import pytest

from lucid.engine.outputs import CompletionOutput
from lucid.server.errors import APIError
from lucid.server.fim import (
    FIM_BATCH,
    ExtraChunk,
    FimTokens,
    fim_stop_ids,
    render_file_level,
    render_infill,
    suffix_prompts,
)
from lucid.server.llamacpp_protocol import InfillRequest
from lucid.server.llamacpp_slots import CompletionSlot, Limits
from lucid.server.ollama_protocol import GenerateRequest
from lucid.server.protocol import parse_model
from lucid.tokenizer import Tokenizer
from lucid.tokenizer.tiny import tiny_gguf_fields, tiny_tokenizer

FIM_NAMES = ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    fields = dict(tiny_gguf_fields())
    fields["tokenizer.ggml.tokens"] = [*fields["tokenizer.ggml.tokens"], *FIM_NAMES]
    fields["tokenizer.ggml.token_type"] = [*fields["tokenizer.ggml.token_type"], *[3] * len(FIM_NAMES)]
    return Tokenizer.from_gguf_fields(fields, "tiny+fim")


@pytest.fixture(scope="module")
def fim(tok) -> FimTokens:
    tokens = FimTokens.find(tok)
    assert tokens is not None
    return tokens


def test_fim_tokens_are_found_by_name(tok, fim):
    assert [fim.prefix, fim.middle, fim.suffix, fim.pad, fim.repo_name, fim.file_sep] == [
        tok.token_id(name) for name in FIM_NAMES]
    assert FimTokens.find(tiny_tokenizer()) is None  # no FIM tokens: FIM requests must be refused


def test_file_level_layout(tok, fim):
    ids = render_file_level(tok, fim, "def f(x):\n    return ", "\n\nprint(f(2))\n")
    assert ids == [fim.prefix, *tok.encode("def f(x):\n    return "), fim.suffix, *tok.encode("\n\nprint(f(2))\n"),
                   fim.middle]
    assert tok.decode(ids, skip_special_tokens=False) == (
        "<|fim_prefix|>def f(x):\n    return <|fim_suffix|>\n\nprint(f(2))\n<|fim_middle|>")


def test_fim_markers_in_user_text_stay_text(tok, fim):
    """Code that mentions a FIM marker (this very test file) must not inject a control token into the prompt."""
    ids = render_file_level(tok, fim, "s = '<|fim_suffix|>'\n", "")
    assert ids.count(fim.suffix) == 1 and tok.encode_text("<|im_end|>") != tok.encode("<|im_end|>")


def test_repo_level_layout_matches_llama_cpp(tok, fim):
    extra = [ExtraChunk("def square(x):\n    return x * x\n", "geometry.py"), ExtraChunk("X = 1\n")]
    prompt = render_infill(tok, fim, "import math\n", "\nprint(1)\n", "    return ", extra, n_ctx=4096, n_predict=32)
    text = tok.decode(prompt.token_ids, skip_special_tokens=False)
    assert text == ("<|repo_name|>myproject\n<|file_sep|>geometry.py\ndef square(x):\n    return x * x\n"
                    "<|file_sep|>tmp\nX = 1\n<|file_sep|>filename\n"
                    "<|fim_prefix|>import math\n    return <|fim_suffix|>\nprint(1)\n<|fim_middle|>")
    assert not prompt.truncated


def test_long_prefix_keeps_its_tail_and_suffix_its_head(tok, fim):
    prefix_ids = tok.encode_text("a = 1\n" * 2000)
    suffix_ids = tok.encode_text("b = 2\n" * 2000)
    prompt_ids = tok.encode_text("x = ")
    prompt = render_infill(tok, fim, "a = 1\n" * 2000, "b = 2\n" * 2000, "x = ", n_ctx=8192, n_predict=32)
    ids = prompt.token_ids
    start, mid = ids.index(fim.prefix) + 1, ids.index(fim.suffix)
    kept_prefix = ids[start:mid - len(prompt_ids)]
    kept_suffix = ids[mid + 1:ids.index(fim.middle)]
    assert prompt.truncated
    assert kept_prefix == prefix_ids[-3 * (FIM_BATCH // 4):]
    assert kept_suffix == suffix_ids[:FIM_BATCH // 4 - 2 - len(prompt_ids)]


def test_extra_context_keeps_its_end_within_the_context(tok, fim):
    chunks = [ExtraChunk("y = 3\n" * 500, f"f{i}.py") for i in range(8)]
    full = render_infill(tok, fim, "p\n", "s\n", "", chunks, n_ctx=100_000, n_predict=0).token_ids
    small = render_infill(tok, fim, "p\n", "s\n", "", chunks, n_ctx=FIM_BATCH + 200 + 2 * 50, n_predict=50)
    head = small.token_ids[:small.token_ids.index(fim.prefix)]
    assert small.truncated and len(head) == 200
    assert head == full[full.index(fim.prefix) - 200:full.index(fim.prefix)]


def test_fim_stop_ids_only_for_fim_prompts(tok, fim):
    assert set(fim_stop_ids(tok, [fim.prefix, 5, fim.suffix, fim.middle])) == set(fim.ids)
    assert fim_stop_ids(tok, tok.encode("plain text")) == []


def test_suffix_prompts_refuses_token_ids_and_non_fim_models(tok):
    assert len(suffix_prompts(tok, ["a", "b"], "c")) == 2
    with pytest.raises(APIError) as err:
        suffix_prompts(tok, [[1, 2, 3]], "c")
    assert err.value.status == 400 and err.value.param == "prompt"
    with pytest.raises(APIError) as err:
        suffix_prompts(tiny_tokenizer(), "a", "b")
    assert err.value.status == 400 and "fill-in-the-middle" in err.value.message


@pytest.mark.parametrize("extra, message", [
    ("not a list", "must be an array"),
    ([{"filename": "a.py"}], '"text" field'),
    ([{"text": 1}], '"text" field'),
    ([{"text": "x", "filename": 3}], '"filename" field must be a string'),
    (["just text"], '"text" field'),
])
def test_bad_input_extra_is_a_400(extra, message):
    with pytest.raises(APIError) as err:
        parse_model({"input_prefix": "", "input_suffix": "", "input_extra": extra}, InfillRequest)
    assert err.value.status == 400 and message in err.value.message


def test_n_cmpl_bounds_use_llama_cpp_message():
    req = parse_model({"input_prefix": "", "input_suffix": "", "n_cmpl": 7}, InfillRequest)
    with pytest.raises(APIError) as err:
        _ = req.completions
    assert err.value.message == "Field 'n_cmpl': Value must be between 1 <= value <= 4, but got 7"


def _out(text: str, finish: str | None = None, stop_reason=None) -> CompletionOutput:
    return CompletionOutput(0, text=text, token_ids=list(range(len(text))), finish_reason=finish,
                            stop_reason=stop_reason)


def test_n_indent_cuts_the_first_line_indented_less():
    slot = CompletionSlot(0, Limits(n_indent=4))
    slot.update(_out("x + 1\n    y = 2\n  "), 0.0)
    assert not slot.done                          # the third line has only blanks so far
    slot.update(_out("x + 1\n    y = 2\n  return y"), 0.0)
    assert slot.done and slot.stop_type == "limit" and slot.text == "x + 1\n    y = 2\n  "


def test_time_limit_ends_at_a_new_line_only():
    slot = CompletionSlot(0, Limits(t_max_predict_ms=100))
    slot.update(_out("a very long line"), 500.0)
    assert not slot.done
    slot.update(_out("a very long line\n"), 600.0)
    assert slot.done and slot.stop_type == "limit" and slot.has_new_line


def test_stop_types():
    eos, word, length = (CompletionSlot(0, Limits()) for _ in range(3))
    eos.update(_out("a", "stop", 151643), 0)
    word.update(_out("a", "stop", "\n\n"), 0)
    length.update(_out("a", "length"), 0)
    assert [(s.stop_type, s.stopping_word) for s in (eos, word, length)] == [
        ("eos", ""), ("word", "\n\n"), ("limit", "")]


def test_ollama_options_map_onto_sampling_params():
    req = parse_model({"model": "m", "prompt": "p", "options": {
        "temperature": 0, "top_k": 5, "top_p": 0.5, "seed": -1, "repeat_penalty": 1.2, "stop": ["\n"],
        "num_predict": 12, "num_ctx": 4096}}, GenerateRequest)
    params = req.sampling_params(req.num_predict(), 1000, [7])
    assert (params.temperature, params.top_k, params.top_p, params.seed, params.repetition_penalty) == (
        0.0, 5, 0.5, None, 1.2)
    assert params.stop == ["\n"] and params.max_tokens == 12 and params.stop_token_ids == [7]
    assert req.stream is True  # Ollama streams unless told not to


@pytest.mark.parametrize("options", [{"temperature": "hot"}, {"top_k": 1.5}, {"num_predict": 0},
                                     {"temperature": 5}, {"stop": [1]}, {"mirostat": 2}])
def test_bad_ollama_options_are_400(options):
    req = parse_model({"model": "m", "prompt": "p", "options": options}, GenerateRequest)
    with pytest.raises(APIError) as err:
        req.sampling_params(req.num_predict(), 1000, [])
    assert err.value.status == 400


@pytest.mark.slow
def test_real_tokenizer_has_qwen_fim_ids(real_gguf_path):
    from lucid.loader.gguf_file import open_gguf, read_metadata

    tokenizer = Tokenizer.from_gguf_fields(read_metadata(open_gguf(real_gguf_path)), str(real_gguf_path))
    tokens = FimTokens.find(tokenizer)
    assert (tokens.prefix, tokens.suffix, tokens.middle, tokens.repo_name, tokens.file_sep) == (
        151659, 151661, 151660, 151663, 151664)
    ids = render_file_level(tokenizer, tokens, "def f(", ")")
    assert ids == [151659, 750, 282, 7, 151661, 8, 151660]
