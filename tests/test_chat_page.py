"""The chat page at GET /, driven in headless Chromium against a real `lucid serve` (tiny random model).

Needs Debian's chromium (`apt-get install chromium`) and the Playwright package (`pip install playwright`; the
browser is the system one, `playwright install` is never needed). Skipped when either is missing.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import httpx
import pytest
from test_server_support import shared_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
API_KEY = "page-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def server(tiny_model):
    # Its own server: an API key (the page must send it) and room for a long answer to stop.
    return shared_server("--model", str(tiny_model.hf_dir), "--served-model-name", "tiny", "--max-model-len", "4096",
                         "--dtype", "float32", "--api-key", API_KEY)


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
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.fill("#api-key", API_KEY)
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("document.getElementById('model-name').textContent === 'tiny'")
    yield page
    context.close()
    assert not errors, errors


def settings(page, temperature: str = "0", max_tokens: str = "12") -> None:
    page.fill("#temperature", temperature)
    page.fill("#max-tokens", max_tokens)


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def wait_answer(page, index: int = 0) -> None:
    page.wait_for_selector(f".msg[data-role=assistant] >> nth={index}")
    page.wait_for_function(f"document.querySelectorAll('.msg[data-role=assistant] .meta')[{index}]"
                           "?.textContent.includes('token')")


def test_page_contract(page):
    assert page.locator("form#composer textarea#prompt").count() == 1
    assert page.locator("form#composer button[type=submit]").count() == 1
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, textarea, select')]
        .filter(el => !el.labels?.length && !el.getAttribute('aria-label')).map(el => el.id)""")
    assert unlabelled == []


def test_send_streams_an_answer_with_stats(page, server):
    settings(page)
    send(page, "Hello, how are you today?")
    assert page.locator(".msg[data-role=user]").inner_text().endswith("Hello, how are you today?")
    wait_answer(page)
    meta = page.locator(".msg[data-role=assistant] .meta").inner_text()
    assert "12 tokens" in meta and "tok/s" in meta, page.locator(".msg[data-role=assistant]").inner_text()
    answer = page.evaluate("lucid.chat.state.history[1].content")
    api = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=60, json={
        "model": "tiny", "messages": [{"role": "user", "content": "Hello, how are you today?"}],
        "temperature": 0, "max_tokens": 12}).json()
    assert answer == api["choices"][0]["message"]["content"]  # greedy: the page shows what the API gives
    # Second turn: the conversation so far goes back to the server.
    send(page, "And then?")
    wait_answer(page, 1)
    assert page.locator(".msg[data-role=assistant]").count() == 2
    assert [m["role"] for m in page.evaluate("lucid.chat.state.history")] == ["user", "assistant"] * 2


def test_shift_enter_is_a_new_line(page):
    page.fill("#prompt", "line one")
    page.press("#prompt", "Shift+Enter")
    page.type("#prompt", "line two")
    assert page.input_value("#prompt") == "line one\nline two"
    assert page.locator(".msg").count() == 0


def long_answer_prompt(server) -> str:
    """A prompt whose greedy answer from the tiny random model runs on without an end token, so the request
    is still running when the test looks (a short answer could end on its own before Stop is pressed)."""
    for prompt in ("Tell me a very long story.", "Count to a thousand.", "Write an essay.", "Go on.", "Hello!",
                   "What is this?", "Explain everything.", "More, please."):
        reply = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=120, json={
            "model": "tiny", "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 400})
        if reply.json()["choices"][0]["finish_reason"] == "length":
            return prompt
    pytest.fail("no candidate prompt gives the tiny model a long greedy answer")


def test_stop_aborts_the_request_on_the_server(page, server):
    prompt = long_answer_prompt(server)
    settings(page, temperature="0", max_tokens="3000")
    send(page, prompt)
    page.wait_for_function("document.querySelectorAll('.msg[data-role=assistant] .tok').length >= 3")
    assert page.locator("#stop").is_visible() and not page.locator("#send").is_visible()
    deadline = time.monotonic() + 5   # the gauge is the engine's view after its latest step
    while (m := server.metrics(AUTH))["lucid_num_requests_running"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m["lucid_num_requests_running"] == 1, (m, page.locator(".msg[data-role=assistant] .tok").count(), prompt)
    page.click("#stop")
    page.wait_for_function("document.querySelector('.msg[data-role=assistant] .meta').textContent.includes('stopped')")
    deadline = time.monotonic() + 15
    while server.metrics(AUTH)["lucid_num_requests_running"] != 0:
        assert time.monotonic() < deadline, "the server kept generating after the page stopped"
        time.sleep(0.1)
    shown = page.locator(".msg[data-role=assistant] .tok").count()
    assert 3 <= shown < 3000
    assert page.locator("#send").is_visible()


def test_new_chat_clears_the_conversation(page):
    settings(page, max_tokens="4")
    send(page, "Hi")
    wait_answer(page)
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0
    assert page.evaluate("lucid.chat.state.history") == []
    assert page.locator("#empty").is_visible()


def test_see_inside_shows_api_probabilities(page, server):
    settings(page, max_tokens="8")
    send(page, "What is a token?")
    wait_answer(page)
    page.check("#inside-toggle", force=True)
    tokens = page.locator(".msg[data-role=assistant] .tok[data-index]")
    assert tokens.count() == 8 and tokens.first.is_visible()
    # No speculation on this server: no token is marked drafted, and the legend has no line for them.
    assert page.locator(".tok.drafted[data-index]").count() == 0 and page.locator(".legend-drafted").is_hidden()
    api = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=60, json={
        "model": "tiny", "messages": [{"role": "user", "content": "What is a token?"}], "temperature": 0,
        "max_tokens": 8, "logprobs": True, "top_logprobs": 5}).json()
    items = api["choices"][0]["logprobs"]["content"]
    for i, item in enumerate(items):
        span = tokens.nth(i)
        prob, logprob = float(span.get_attribute("data-prob")), float(span.get_attribute("data-logprob"))
        assert logprob == pytest.approx(item["logprob"], abs=1e-5)
        assert prob == pytest.approx(math.exp(item["logprob"]), rel=1e-5)
    popover = page.locator("#token-popover")
    tokens.nth(2).hover()
    popover.wait_for(state="visible")
    shown = [float(x) for x in popover.locator("td.num").evaluate_all("els => els.map(e => e.dataset.prob)")]
    assert shown == pytest.approx([math.exp(t["logprob"]) for t in items[2]["top_logprobs"]], rel=1e-5)
    assert popover.locator("td.num").first.inner_text().endswith("%")
    page.keyboard.press("Escape")
    assert popover.is_hidden()
    # Keyboard: one tab stop per answer, then the arrow keys walk the tokens.
    tokens.first.focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.index") == "1"
    popover.wait_for(state="visible")
    first_alt = float(popover.locator("td.num").first.get_attribute("data-prob"))
    assert first_alt == pytest.approx(math.exp(items[1]["top_logprobs"][0]["logprob"]), rel=1e-5)


def test_missing_api_key_is_explained(page):
    page.fill("#api-key", "")
    settings(page, max_tokens="4")
    send(page, "Hi")
    error = page.locator(".msg[data-role=assistant] .error")
    error.wait_for()
    assert "API key" in error.inner_text()


def test_model_output_is_escaped(page):
    evil = '<script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2"> **bold**\n' \
           '```html\n<script>window.pwned = 3</script>\n```\n[click](javascript:window.pwned=4)'
    frames = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
              {"choices": [{"index": 0, "delta": {"content": evil}, "finish_reason": "stop",
                            "logprobs": {"content": [{"token": "<script>", "logprob": -0.5, "top_logprobs": [
                                {"token": "<script>", "logprob": -0.5}, {"token": "<img>", "logprob": -1.5}]}]}}]},
              {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}]
    body = "".join(f"data: {json.dumps(f)}\n\n" for f in frames) + "data: [DONE]\n\n"
    page.route("**/v1/chat/completions",
               lambda route: route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body))
    send(page, "say something dangerous")
    wait_answer(page)
    md = page.locator(".msg[data-role=assistant] .md")
    assert "<script>window.pwned = 1</script>" in md.inner_text()
    assert md.locator("strong").inner_text() == "bold"
    assert md.locator("pre code").inner_text() == "<script>window.pwned = 3</script>"
    assert page.locator("#messages script, #messages img, #messages a").count() == 0
    page.check("#inside-toggle", force=True)
    assert page.locator(".tok[data-index]").first.inner_text() == "<script>"
    assert page.evaluate("window.pwned") is None


def test_markdown_renderer(page):
    html = page.evaluate("""() => {
        const box = document.createElement('div');
        lucid.renderInto(box, '# Title\\n\\nSome *em* and `x<y` and [a link](https://example.org).\\n\\n' +
            '- one\\n- two\\n  - nested\\n\\n1. first\\n2. second\\n\\n> quoted\\n\\n```python\\nprint("<b>")\\n');
        return box.innerHTML;
    }""")
    assert "<h2>Title</h2>" in html and "<em>em</em>" in html and "<code>x&lt;y</code>" in html
    assert 'href="https://example.org/"' in html and 'rel="noopener noreferrer"' in html
    assert html.count("<li>") == 5 and "<ol>" in html and "<blockquote>" in html
    assert 'class="code-block open"' in html and "print(\"&lt;b&gt;\")" in html  # an unclosed fence, mid-stream


def test_markdown_renderer_survives_random_input(page):
    """Half-written Markdown arrives with every streamed chunk: any string must render, quickly, to safe tags."""
    tags = page.evaluate("""() => {
        const alphabet = ['*', '**', '_', '`', '```', '~~', '[', ']', '(', ')', '#', '- ', '1. ', '> ', '\\n', ' ',
                          'a', 'b', '<', '>', 'http://x', 'javascript:y'];
        let seed = 7;
        const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
        const seen = new Set();
        const started = performance.now();
        for (let i = 0; i < 400; i++) {
            let text = '';
            for (let j = rand(60); j > 0; j--) text += alphabet[rand(alphabet.length)];
            const box = document.createElement('div');
            lucid.renderInto(box, text);
            box.querySelectorAll('*').forEach((el) => seen.add(el.tagName.toLowerCase()));
            box.querySelectorAll('a').forEach((a) => { if (!a.href.startsWith('http')) seen.add('bad link'); });
        }
        return {tags: [...seen].sort(), ms: performance.now() - started};
    }""")
    allowed = {"p", "br", "strong", "em", "del", "code", "pre", "a", "ul", "ol", "li", "blockquote", "hr", "div",
               "span", "button", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"}
    assert set(tags["tags"]) <= allowed
    assert tags["ms"] < 5000


def test_phone_layout(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server.url + "/")
    assert not page.locator("#settings").is_visible()
    page.click("#settings-toggle")
    assert page.locator("#settings").is_visible() and page.locator("#temperature").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "phone.png"))
    context.close()
