"""Editors against `lucid serve` with the real default model (Qwen2.5-Coder, which has FIM tokens): llama.vscode's
/infill body, Continue's FIM text on /v1/completions, OpenAI's `suffix`, Ollama's `suffix`, and prefix caching
across the keystrokes of a typing session. One server for the module (shared with the other real-model tests)."""

from __future__ import annotations

import httpx
import ollama
import pytest
from test_server_support import shared_server

from lucid.engine.kv_reuse import RECOMPUTE_AFTER_EDIT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAME = "Qwen2-0.5B-Instruct"
PREFIX = "import math\n\n\ndef area_of_circle(radius: float) -> float:\n"
SUFFIX = "\n\n\nprint(area_of_circle(2.0))\n"
EXTRA = [{"text": "def square(x):\n    return x * x\n", "time": 1732800000000, "filename": "geometry.py"}]


@pytest.fixture(scope="module")
def server(real_gguf_path):
    return shared_server("--served-model-name", NAME, "--max-model-len", "4096")


def vscode_body(prompt: str, **overrides: object) -> dict:
    """llama.vscode's /infill body (src/llama-server.ts createRequestPayload), with its default settings."""
    body = {"id_slot": 0, "input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": EXTRA, "prompt": prompt,
            "n_predict": 32, "n_cmpl": 3, "top_k": 40, "top_p": 0.99, "stream": False,
            "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True, "n_indent": 4, "t_max_prompt_ms": 500,
            "t_max_predict_ms": 2500, "model": NAME}
    return {**body, **overrides}


def test_llama_vscode_infill_three_completions(server):
    results = httpx.post(f"{server.url}/infill", json=vscode_body("    return "), timeout=600).json()
    assert isinstance(results, list) and [r["index"] for r in results] == [0, 1, 2]
    for r in results:
        assert r["stop"] is True and isinstance(r["content"], str) and r["stop_type"] in ("eos", "limit", "word")
        assert r["tokens_cached"] == r["tokens_evaluated"] + r["tokens_predicted"]
        assert r["timings"]["predicted_n"] == r["tokens_predicted"] <= 32
        assert "<|" not in r["content"]            # FIM and end tokens stop it and are never text
    assert any("radius" in r["content"] for r in results), [r["content"] for r in results]


def test_typing_session_reuses_the_cache(server):
    """llama.vscode warms the cache with n_predict 0, then each keystroke sends a longer `prompt`."""
    warm_body = {"id_slot": 0, "input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": EXTRA, "prompt": "",
                 "n_predict": 0, "samplers": [], "cache_prompt": True, "t_max_prompt_ms": 500, "t_max_predict_ms": 1}
    warm = httpx.post(f"{server.url}/infill", json=warm_body, timeout=600).json()
    assert warm["content"] == "" and warm["tokens_predicted"] == 0
    seen = []
    for typed in ("    r", "    ret", "    retur", "    return m", "    return math."):
        r = httpx.post(f"{server.url}/infill", timeout=600,
                       json=vscode_body(typed, n_predict=4, n_cmpl=1, temperature=0)).json()
        seen.append((r["timings"]["cache_n"], r["timings"]["prompt_n"], r["tokens_cached"], r["tokens_evaluated"]))
    # Each keystroke computes only the last partial block, the typed tail and the short suffix: the rest (repo
    # context and prefix) comes from the prefix cache.
    assert all(cache_n > 0 and prompt_n == evaluated - cache_n <= 16 + 24 for cache_n, prompt_n, _, evaluated in seen)
    assert seen[-1][3] > seen[0][3] and seen[-1][2] > seen[0][2], seen      # tokens_cached grows with the line


def test_one_typed_line_computes_only_the_line(server):
    """Within one line, the repo context and the prefix before the typed text come from the prefix cache, and the
    suffix after it, which moves with every keystroke (llama.cpp's layout puts the line before the suffix), is copied
    from the previous request's K/V at its new positions (--cache-reuse, 256 tokens by default): a keystroke computes
    the typed line and the suffix's first RECOMPUTE_AFTER_EDIT tokens, the last partly filled KV block before them,
    and the final <|fim_middle|>. tokens_cached grows."""
    # ~340 tokens: over --cache-reuse's 256, and short enough that llama.cpp's trimming (n_batch/4 - 2 - the line's
    # tokens) keeps it whole
    suffix = SUFFIX + "".join(f"print(area_of_circle({r}.5) + square({r}))\n" for r in range(22))
    suffix_n = len(httpx.post(f"{server.url}/tokenize", json={"prompt": suffix}).json()["tokens"])
    reused_before = _reused_tokens(server)
    seen = []
    for typed in ("    r", "    ret", "    retur", "    return m", "    return math.p"):
        r = httpx.post(f"{server.url}/infill", timeout=600,
                       json=vscode_body(typed, input_suffix=suffix, n_predict=2, n_cmpl=1, temperature=0)).json()
        typed_n = len(httpx.post(f"{server.url}/tokenize", json={"prompt": typed}).json()["tokens"])
        seen.append((r["timings"]["cache_n"], r["timings"]["prompt_n"], r["tokens_evaluated"], r["tokens_cached"],
                     typed_n))
    block = 16  # the engine's KV block size: the prefix cache matches whole blocks
    before_line = [evaluated - typed_n - suffix_n - 2 for _, _, evaluated, _, typed_n in seen]  # 2: the markers
    assert 256 < suffix_n < 450 and before_line[0] > 30 and not r["truncated"], (suffix_n, seen)
    for (cache_n, prompt_n, evaluated, _, typed_n), before in zip(seen[1:], before_line[1:]):
        # the suffix was not computed, but for the RECOMPUTE_AFTER_EDIT tokens that follow the typed line
        assert prompt_n == evaluated - cache_n <= (block - 1) + typed_n + RECOMPUTE_AFTER_EDIT + 1, seen
        assert cache_n >= before - (block - 1) + suffix_n - RECOMPUTE_AFTER_EDIT, seen
    assert [s[3] for s in seen] == sorted(s[3] for s in seen) and seen[-1][3] > seen[0][3], seen
    assert _reused_tokens(server) - reused_before >= 4 * 256            # each keystroke copied one run of 256+


def test_a_keystroke_after_reuse_completes_the_new_line_not_the_old(server):
    """The K/V copied for the moved suffix was computed after the *old* typed line; the tokens right after the edit
    carry it most and are computed again (kv_reuse.RECOMPUTE_AFTER_EDIT). Copied as they were, the model went on
    from "return m" ("ath.pi ...") after "return math."."""
    suffix = SUFFIX + "".join(f"print(area_of_circle({r}.5))\n" for r in range(40))     # ~400 tokens
    reused_before = _reused_tokens(server)
    first = httpx.post(f"{server.url}/infill", timeout=600,
                       json=vscode_body("    return m", input_suffix=suffix, input_extra=[], n_cmpl=1, temperature=0,
                                        n_predict=8)).json()
    assert first["content"].startswith("ath"), first["content"]
    body = vscode_body("    return math.", input_suffix=suffix, input_extra=[], n_cmpl=1, temperature=0, n_predict=8)
    reused = httpx.post(f"{server.url}/infill", json=body, timeout=600).json()
    assert _reused_tokens(server) - reused_before >= 256                        # the suffix was copied
    assert not reused["content"].startswith("ath"), reused["content"]
    exact = httpx.post(f"{server.url}/infill", json={**body, "cache_prompt": False}, timeout=600).json()
    assert exact["timings"]["prompt_n"] > 256                                   # no copy: computed again
    assert reused["content"][:2] == exact["content"][:2], (reused["content"], exact["content"])


def _reused_tokens(server) -> float:
    metrics = httpx.get(f"{server.url}/metrics", timeout=60).text
    [line] = [m for m in metrics.splitlines() if m.startswith("lucid_kv_cache_reused_tokens ")]
    return float(line.split()[1])


def test_continue_fim_text_streamed(server):
    """Continue sends the FIM prompt as text to /v1/completions; FIM tokens must be recognised and stop it."""
    client = server.client(api_key="0")
    prompt = f"<|fim_prefix|>{PREFIX}    return <|fim_suffix|>{SUFFIX}<|fim_middle|>"
    kwargs = {"model": NAME, "prompt": prompt, "max_tokens": 24, "temperature": 0,
              "stop": ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                       "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>", "\n\n"]}
    chunks = list(client.completions.create(**kwargs, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    whole = client.completions.create(**kwargs)
    assert text == whole.choices[0].text and "radius" in text
    assert whole.usage.prompt_tokens == len(httpx.post(f"{server.url}/tokenize",
                                                       json={"prompt": prompt}).json()["tokens"]) < len(prompt) // 2
    # OpenAI's `suffix` renders the same file-level prompt
    with_suffix = client.completions.create(**{**kwargs, "prompt": f"{PREFIX}    return ", "suffix": SUFFIX})
    assert with_suffix.choices[0].text == text and with_suffix.usage.prompt_tokens == whole.usage.prompt_tokens


def test_ollama_generate_with_suffix(server):
    client = ollama.Client(host=server.url, timeout=600)
    kwargs = {"model": NAME, "prompt": f"{PREFIX}    return ", "suffix": SUFFIX,
              "options": {"temperature": 0, "num_predict": 24}}
    whole = client.generate(**kwargs)
    parts = list(client.generate(**kwargs, stream=True))
    assert "".join(p.response for p in parts) == whole.response and "radius" in whole.response
    assert parts[-1].done and whole.done_reason in ("stop", "length") and whole.eval_count <= 24
    assert "insert" in client.show(NAME).capabilities


def test_completion_endpoint_streams_fim_text(server):
    prompt = f"<|fim_prefix|>{PREFIX}    return <|fim_suffix|>{SUFFIX}<|fim_middle|>"
    with httpx.stream("POST", f"{server.url}/completion", timeout=600,
                      json={"prompt": prompt, "n_predict": 24, "temperature": 0, "stream": True}) as response:
        frames = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert frames and '"stop":true' in frames[-1] and "[DONE]" not in frames[-1]
