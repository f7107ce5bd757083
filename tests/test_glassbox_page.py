"""The glass box in the browser against the real default model: the lens ladder and the attention view of a clicked
token, a fork from an alternative, and the engine view (shared prefix blocks, chunked prefill in the timeline).
Takes the README's screenshots into docs/. Slow (the real model on CPU) and bounded: one short answer, one fork,
four small requests."""

from __future__ import annotations

import collections
import math
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from test_server_support import shared_server

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parent.parent / "docs"
PROMPT = "Explain what a KV cache is in two sentences."
NAME = "lucid-real"
LENS_TOLERANCE = 1e-3   # the lens's last row vs the popover (the bound; through the fused step it is exact)


@pytest.fixture(scope="module")
def server():
    return shared_server("--served-model-name", NAME, "--max-model-len", "4096")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, errors


def test_lens_attention_and_fork_on_a_real_answer(page, server):
    page.goto(server.url + "/")
    page.wait_for_function(f"document.getElementById('model-name').textContent === '{NAME}'")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "12")
    page.check("#inside-toggle", force=True)
    page.fill("#prompt", PROMPT)
    page.press("#prompt", "Enter")
    page.wait_for_function("document.querySelector('.msg[data-role=assistant] .meta')?.textContent.includes('token')",
                           timeout=300_000)
    index = 3
    item = page.evaluate(f"document.querySelector('.msg.assistant').answer.tokens[{index}]")
    page.click(f".msg.assistant .tok[data-index='{index}']")
    page.wait_for_selector(".lens-row", timeout=120_000)
    rows = page.locator(".lens-row")
    assert rows.count() == 25
    assert "rough" in rows.first.inner_text()
    last_prob = float(rows.last.locator(".lens-prob").get_attribute("data-prob"))
    # The popover's probability: the probe taps the fused step's own forward, so the last row is what was sampled from.
    assert last_prob == pytest.approx(math.exp(item["logprob"]), abs=LENS_TOLERANCE)
    top1 = rows.last.locator(".lens-chip").first
    assert top1.locator("code").inner_text() == item["top_logprobs"][0]["token"].replace("\n", "↵")
    assert float(top1.get_attribute("data-prob")) == pytest.approx(math.exp(item["top_logprobs"][0]["logprob"]),
                                                                    abs=LENS_TOLERANCE)
    # Where it looked: every earlier position drawn, the strongest source before the token.
    positions = page.locator(".att-tok").count()
    strongest = int(page.locator(".gb-source").first.get_attribute("data-position"))
    assert positions > 20 and 0 <= strongest < positions
    page.select_option(".gb-layer", "12")
    page.select_option(".gb-head-select", "3")
    assert page.locator(".gb-source").count() == 5
    page.set_viewport_size({"width": 1100, "height": 1900})        # room for the whole ladder in the shots
    page.locator(".gb-lens").screenshot(path=str(DOCS / "glassbox-lens.png"))
    page.locator(".gb-attention").screenshot(path=str(DOCS / "glassbox-attention.png"))

    # Fork here: the runner-up at this token, continued greedily.
    alternative = next(t for t in item["top_logprobs"][1:] if t["bytes"])
    buttons = page.locator(".gb-alt")
    tokens = [buttons.nth(i).get_attribute("data-token") for i in range(buttons.count())]
    buttons.nth(tokens.index(alternative["token"])).click()
    page.wait_for_function("document.querySelector('.branch-label')?.textContent.startsWith('branch 2/2')",
                           timeout=300_000)
    status = page.locator(".gb-fork-status")
    assert "tokens reused" in status.inner_text() and int(status.get_attribute("data-reused")) > 0
    branch = page.evaluate("document.querySelector('.msg.assistant').answer.tokens.map(t => t.bytes)")
    first = page.evaluate("document.querySelector('.msg.assistant').answer.tokens.map(t => t.token)")
    assert first[index] == alternative["token"]
    # At temperature 0 the branch equals a fresh request with that prefix.
    messages = page.evaluate("document.querySelector('.msg.assistant').request.messages")
    prefix = httpx.post(f"{server.url}/glassbox/token", timeout=300, json={
        "messages": messages, "completion": branch[:index + 1]}).json()["token_ids"]
    fresh = httpx.post(f"{server.url}/v1/completions", timeout=300, json={
        "model": NAME, "prompt": prefix, "max_tokens": len(branch) - index - 1, "temperature": 0,
        "logprobs": 0}).json()
    assert "".join(first[index + 1:]) == "".join(fresh["choices"][0]["logprobs"]["tokens"])
    page.locator(".msg.assistant").screenshot(path=str(DOCS / "glassbox-fork.png"))
    page.click(".branch-bar button[aria-label='previous branch']")
    assert page.locator(".branch-label").inner_text().startswith("branch 1/2")


def stream_completion(url: str, prompt: list[int], max_tokens: int, started: threading.Event) -> None:
    with httpx.stream("POST", f"{url}/v1/completions", timeout=600, json={
            "model": NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True}) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                started.set()


def test_engine_view_shows_shared_blocks_and_chunked_prefill(page, server):
    page.goto(server.url + "/engine")
    page.wait_for_function("document.getElementById('live').textContent.startsWith('live')")
    words = httpx.post(f"{server.url}/tokenize", json={"prompt": " ".join(f"item{i}" for i in range(200))}).json()
    system = words["tokens"][:64]                                   # a 64-token shared prefix: 4 blocks of 16
    # Long enough answers (~5 s and ~2 s at full speed) that the page's 2 Hz poll sees A and B running together.
    a_started, b_started = threading.Event(), threading.Event()
    a = threading.Thread(target=stream_completion, args=(server.url, system + [9707, 11], 300, a_started))
    a.start()
    assert a_started.wait(300)                                      # A decodes: its prefix blocks are published
    b = threading.Thread(target=stream_completion, args=(server.url, system + [3838, 374], 100, b_started))
    b.start()
    page.wait_for_function("document.getElementById('pool-summary').dataset.shared === '4'", timeout=300_000)
    summary = page.locator("#pool-summary")
    assert summary.get_attribute("data-shared-ref-counts") == "2,2,2,2"
    page.screenshot(path=str(DOCS / "engine-view.png"), full_page=False)
    b.join(600)
    # A long prompt arrives while A still decodes: its prefill is cut into chunks that share steps with A.
    long_prompt = (words["tokens"] * 8)[:1400]
    c_started = threading.Event()
    c = threading.Thread(target=stream_completion, args=(server.url, long_prompt, 2, c_started))
    c.start()
    c.join(600)
    a.join(600)
    page.wait_for_function("document.getElementById('pool-summary').dataset.used === '0'", timeout=120_000)
    steps = page.evaluate("window.lucidEngine.steps")
    seen = [(i["request_id"], i["kind"], i["tokens"]) for s in steps for i in s["items"]]
    prefilled = collections.Counter()
    for request_id, kind, n in seen:
        if kind == "prefill":
            prefilled[request_id] += n
    long_id = next((r for r, n in prefilled.items() if n >= 1000), None)   # ~1,336 uncached prompt tokens
    assert long_id is not None, seen
    chunks = [s for s in steps if any(i["request_id"] == long_id and i["kind"] == "prefill" for i in s["items"])]
    assert len(chunks) >= 2
    assert sum(any(i["kind"] == "decode" and i["request_id"] != long_id for i in s["items"]) for s in chunks) >= 2
    assert page.locator("#steps tbody tr").count() >= len(chunks)
    time.sleep(0.2)
