"""`lucid serve` with the real default model, addressed as the reference walk-through does (REFERENCE.md §1-2)."""

from __future__ import annotations

import httpx
import pytest
from test_server_support import shared_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAME = "Qwen2-0.5B-Instruct"
REFERENCE_MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": "详细介绍下你自己。"}]
REFERENCE_IDS = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 113511, 16872,
                 107828, 1773, 151645, 198, 151644, 77091, 198]


@pytest.fixture(scope="module")
def real_server(real_gguf_path):
    return shared_server("--served-model-name", NAME, "--max-model-len", "4096")


def test_reference_request(real_server):
    client = real_server.client(api_key="0")
    result = client.chat.completions.create(messages=REFERENCE_MESSAGES, model=NAME, max_tokens=24, temperature=0.7)
    assert result.model == NAME and result.id.startswith("chatcmpl-")
    assert result.usage.prompt_tokens == 23
    assert result.choices[0].message.content


def test_tokenize_gives_the_reference_ids(real_server):
    body = httpx.post(f"{real_server.url}/tokenize", json={"model": NAME, "messages": REFERENCE_MESSAGES}).json()
    assert body["tokens"] == REFERENCE_IDS and body["count"] == 23
    text = httpx.post(f"{real_server.url}/detokenize", json={"tokens": REFERENCE_IDS}).json()["prompt"]
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n详细介绍下你自己。"
                    "<|im_end|>\n<|im_start|>assistant\n")


def test_greedy_stream_equals_non_stream_in_chinese(real_server):
    client = real_server.client(api_key="0")
    kwargs = {"model": NAME, "messages": REFERENCE_MESSAGES, "max_tokens": 20, "temperature": 0}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs, stream=True)
                       if c.choices)
    assert streamed == whole
    assert any("\u4e00" <= ch <= "\u9fff" for ch in whole)  # the model answers in Chinese
