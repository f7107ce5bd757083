"""The chat page's "See inside" marks the tokens speculative decoding drafted and kept: a real `lucid serve
--speculative` (tiny random model, whose greedy answers fall into loops that n-gram drafts predict), its API's
`"drafted": true` extension on logprobs, and the marks, legend line and popover note the page draws from it."""

from __future__ import annotations

import json

import httpx
import pytest
from test_chat_page import API_KEY, AUTH, browser, page, send, settings, wait_answer  # noqa: F401 - shared fixtures
from test_server_support import shared_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]   # a loaded box takes minutes to start a server

MAX_TOKENS = 40
CANDIDATES = ("Repeat after me: one two three, one two three.", "Hello!", "Count to a thousand.", "Go on.",
              "Tell me a very long story.", "What is this?")


@pytest.fixture(scope="module")
def server(tiny_model):
    # Rows at no cost in the cost model: every n-gram match is drafted, so the tiny model's loops are drafted.
    return shared_server("--model", str(tiny_model.hf_dir), "--served-model-name", "tiny", "--max-model-len", "4096",
                         "--dtype", "float32", "--api-key", API_KEY, "--speculative", "ngram:4",
                         "--speculative-config", json.dumps({"row_cost": 0, "verify_cost": 0}))


def ask(server, prompt: str) -> list[dict]:
    reply = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=120, json={
        "model": "tiny", "messages": [{"role": "user", "content": prompt}], "temperature": 0,
        "max_tokens": MAX_TOKENS, "logprobs": True, "top_logprobs": 5})
    reply.raise_for_status()
    return reply.json()["choices"][0]["logprobs"]["content"]


@pytest.fixture(scope="module")
def drafted_answer(server) -> tuple[str, list[dict]]:
    """A prompt whose greedy answer has drafted-and-kept tokens, and that answer's logprobs from the API."""
    for prompt in CANDIDATES:
        items = ask(server, prompt)
        if 0 < sum(item.get("drafted", False) for item in items) < len(items):
            return prompt, items
    pytest.fail("no candidate prompt gives the tiny model an answer with drafted tokens")


def test_api_flags_drafted_tokens_as_an_extension(server, drafted_answer):
    prompt, items = drafted_answer
    assert all(item.get("drafted") in (None, True) for item in items)   # only `true` is ever sent
    assert ask(server, prompt) == items                                 # greedy: the same answer, the same marks
    metrics = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=30).text
    accepted = [line for line in metrics.splitlines() if line.startswith("lucid_spec_decode_num_accepted_tokens")]
    assert accepted and float(accepted[0].split()[-1]) >= sum("drafted" in item for item in items)


def test_see_inside_marks_drafted_tokens(page, drafted_answer, tmp_path):  # noqa: F811
    prompt, items = drafted_answer
    settings(page, max_tokens=str(MAX_TOKENS))
    send(page, prompt)
    wait_answer(page)
    page.check("#inside-toggle", force=True)
    tokens = page.locator(".msg[data-role=assistant] .tok[data-index]")
    assert tokens.count() == len(items)
    marked = [int(i) for i in page.locator(".msg[data-role=assistant] .tok.drafted[data-index]").evaluate_all(
        "els => els.map(e => e.dataset.index)")]
    assert marked == [i for i, item in enumerate(items) if item.get("drafted")]
    legend = page.locator(".msg[data-role=assistant] .legend-drafted")
    assert legend.is_visible() and "drafted by n-gram, accepted" in legend.inner_text()
    popover = page.locator("#token-popover")
    tokens.nth(marked[0]).hover()
    popover.wait_for(state="visible")
    assert "drafted by n-gram, accepted" in popover.inner_text()
    assert "drafted by n-gram, accepted" in tokens.nth(marked[0]).get_attribute("aria-label")
    plain = next(i for i, item in enumerate(items) if not item.get("drafted"))
    tokens.nth(plain).hover()
    popover.wait_for(state="visible")
    assert "drafted" not in popover.inner_text()
    page.locator(".msg[data-role=assistant]").screenshot(path=str(tmp_path / "drafted.png"))
