"""The OpenAI API of a real `lucid serve` (tiny random model), driven by the official openai client."""

from __future__ import annotations

import httpx
import pytest
from test_server_support import TINY_MAX_MODEL_LEN, TINY_NAMES, shared_server, tiny_server_args

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny_server(tiny_model):
    return shared_server(*tiny_server_args(tiny_model))

HELLO = [{"role": "user", "content": "Hello, how are you today?"}]


def test_models_lists_the_first_served_name(tiny_server):
    models = tiny_server.client().models.list()
    assert [m.id for m in models.data] == [TINY_NAMES[0]]


def test_chat_completion_shape(tiny_server):
    result = tiny_server.client().chat.completions.create(model=TINY_NAMES[1], messages=HELLO, max_tokens=8,
                                                          temperature=0)
    assert result.id.startswith("chatcmpl-") and result.object == "chat.completion"
    assert result.model == TINY_NAMES[1]  # any served name may be used, and is echoed
    [choice] = result.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = result.usage
    assert usage.completion_tokens <= 8 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    tokenized = httpx.post(f"{tiny_server.url}/tokenize", json={"messages": HELLO}).json()
    assert usage.prompt_tokens == tokenized["count"] == len(tokenized["tokens"])
    assert tokenized["max_model_len"] == TINY_MAX_MODEL_LEN


def test_multi_turn_and_content_parts(tiny_server):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "And now?"}]
    result = tiny_server.client().chat.completions.create(model="tiny", messages=messages, max_tokens=4)
    assert result.usage.completion_tokens <= 4


def test_stream_equals_non_stream_for_greedy_chat(tiny_server):
    client = tiny_server.client()
    kwargs = {"model": "tiny", "messages": [{"role": "user", "content": "你好，世界！🌍 Tell me a story."}],
              "max_tokens": 24, "temperature": 0}
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices]
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    joined = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert joined == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in content_chunks if c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    usage_chunk = chunks[-1]  # include_usage: a last chunk with no choices and the usage
    # the second identical request hits the prefix cache: cached_tokens may differ, the counts may not
    details = {"prompt_tokens_details"}
    assert usage_chunk.choices == []
    assert usage_chunk.usage.model_dump(exclude=details) == whole.usage.model_dump(exclude=details)
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_equals_non_stream_for_greedy_completion(tiny_server):
    client = tiny_server.client()
    kwargs = {"model": "tiny", "prompt": "The quick brown fox", "max_tokens": 20, "temperature": 0}
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(**kwargs, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert whole.id.startswith("cmpl-") and whole.object == "text_completion"


def test_n_choices_streamed_and_not(tiny_server):
    client = tiny_server.client()
    result = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, n=2, temperature=1, seed=3)
    assert [c.index for c in result.choices] == [0, 1]
    chunks = list(client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, n=2, stream=True))
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        assert mine[0].delta.role == "assistant"
        assert len([c for c in mine if c.finish_reason]) == 1 and mine[-1].finish_reason


def test_seed_makes_sampling_reproducible(tiny_server):
    client = tiny_server.client()

    def sample(seed: int) -> str:
        return client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=16, temperature=1,
                                              seed=seed).choices[0].message.content

    assert sample(1234) == sample(1234)


def test_stop_string_ends_the_text(tiny_server):
    client = tiny_server.client()
    kwargs = {"model": "tiny", "prompt": "Hello, world! How are", "max_tokens": 32, "temperature": 0,
              "extra_body": {"ignore_eos": True}}
    text = client.completions.create(**kwargs).choices[0].text
    printable = [i for i in range(3, len(text) - 2) if text[i:i + 2].isprintable() and text[i:i + 2].strip()]
    if not printable:
        pytest.skip(f"the random model wrote nothing usable as a stop string: {text!r}")
    stop = text[printable[0]:printable[0] + 2]
    stopped = client.completions.create(**kwargs, stop=[stop, "never-seen"]).choices[0]
    assert stopped.text == text[:text.index(stop)]
    assert stopped.finish_reason == "stop"


def test_chat_logprobs_shape(tiny_server):
    result = tiny_server.client().chat.completions.create(model="tiny", messages=HELLO, max_tokens=5,
                                                          logprobs=True, top_logprobs=3)
    content = result.choices[0].logprobs.content
    assert len(content) == result.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0 and isinstance(item.token, str) and isinstance(item.bytes, list)
        assert len(item.top_logprobs) == 3
        assert [t.logprob for t in item.top_logprobs] == sorted((t.logprob for t in item.top_logprobs), reverse=True)
        assert item.logprob <= item.top_logprobs[0].logprob + 1e-4


def test_completion_logprobs_legacy_shape(tiny_server):
    result = tiny_server.client().completions.create(model="tiny", prompt="Hello", max_tokens=5, logprobs=2)
    lp = result.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    for token, top in zip(lp.tokens, lp.top_logprobs, strict=True):
        assert token in top and len(top) <= 3


def test_prompt_forms_and_echo(tiny_server):
    client = tiny_server.client()
    ids = httpx.post(f"{tiny_server.url}/tokenize", json={"prompt": "Hello there"}).json()["tokens"]
    one = client.completions.create(model="tiny", prompt=ids, max_tokens=3, temperature=0)
    same = client.completions.create(model="tiny", prompt="Hello there", max_tokens=3, temperature=0)
    assert one.choices[0].text == same.choices[0].text and one.usage.prompt_tokens == len(ids)
    several = client.completions.create(model="tiny", prompt=["Hello there", "你好 🌍"], max_tokens=3, n=2)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    lists = client.completions.create(model="tiny", prompt=[ids, ids[:2]], max_tokens=2)
    assert lists.usage.prompt_tokens == len(ids) + 2
    echoed = client.completions.create(model="tiny", prompt="你好 🌍", max_tokens=3, echo=True)
    assert echoed.choices[0].text.startswith("你好 🌍")


def test_omitted_max_tokens(tiny_server):
    client = tiny_server.client()
    completion = client.completions.create(model="tiny", prompt="Hello", extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == 16  # the completions default

    def count(words: int) -> int:
        messages = [{"role": "user", "content": " ".join(["word"] * words)}]
        return httpx.post(f"{tiny_server.url}/tokenize", json={"messages": messages}).json()["count"]

    ids = httpx.post(f"{tiny_server.url}/tokenize", json={"prompt": " ".join(["word"] * 600)}).json()["tokens"]
    near_full = ids[:TINY_MAX_MODEL_LEN - 6]
    clipped = client.completions.create(model="tiny", prompt=near_full, extra_body={"ignore_eos": True})
    assert clipped.usage.completion_tokens == 6  # the default 16, clipped to the room left

    small, large = count(10), count(110)
    words = 10 + (TINY_MAX_MODEL_LEN - 12 - small) * 100 // (large - small)
    prompt_tokens = count(words)
    assert prompt_tokens < TINY_MAX_MODEL_LEN, "the test needs a prompt that fits"
    messages = [{"role": "user", "content": " ".join(["word"] * words)}]
    chat = client.chat.completions.create(model="tiny", messages=messages, extra_body={"ignore_eos": True})
    # chat: the rest of the context, as OpenAI does
    assert chat.usage.completion_tokens == TINY_MAX_MODEL_LEN - prompt_tokens
    assert chat.choices[0].finish_reason == "length"


def test_tokenize_and_detokenize_round_trip(tiny_server):
    text = "Hello, 世界! 🎉 ok"
    tokens = httpx.post(f"{tiny_server.url}/tokenize", json={"prompt": text}).json()["tokens"]
    back = httpx.post(f"{tiny_server.url}/detokenize", json={"tokens": tokens}).json()
    assert back == {"prompt": text}


def test_service_endpoints(tiny_server):
    assert httpx.get(f"{tiny_server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{tiny_server.url}/").headers["content-type"].startswith("text/html")
    assert httpx.get(f"{tiny_server.url}/docs").status_code == 200
    doc = httpx.get(f"{tiny_server.url}/openapi.json").json()
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert "400" in chat["responses"] and "422" not in chat["responses"]
    assert "ChatCompletionRequest" in doc["components"]["schemas"]
    metrics = httpx.get(f"{tiny_server.url}/metrics").text
    for name in ("lucid_requests_total", "lucid_prompt_tokens_total", "lucid_generation_tokens_total",
                 "lucid_num_requests_running", "lucid_num_requests_waiting", "lucid_kv_cache_usage_ratio",
                 "lucid_time_to_first_token_seconds_bucket", "lucid_inter_token_latency_seconds_bucket"):
        assert name in metrics


def test_usage_reports_prefix_cache_hits_as_cached_tokens(tiny_server):
    client = tiny_server.client()
    messages = [{"role": "system", "content": "You answer questions about tokenizers, caches and language models, "
                                              "briefly and in plain words, without lists."},
                {"role": "user", "content": "What is a key-value cache, and why does it help a second request?"}]
    first = client.chat.completions.create(model="tiny", messages=messages, max_tokens=2, temperature=0)
    again = client.chat.completions.create(model="tiny", messages=messages, max_tokens=2, temperature=0,
                                           stream=True, stream_options={"include_usage": True})
    [usage] = [c.usage for c in again if c.usage]
    assert first.usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens_details.cached_tokens
    assert 0 < usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens  # the last token is always computed
    completion = httpx.post(f"{tiny_server.url}/v1/completions",
                            json={"model": "tiny", "prompt": [messages[1]["content"]] * 2, "max_tokens": 1}).json()
    assert completion["usage"]["prompt_tokens_details"]["cached_tokens"] >= 0
