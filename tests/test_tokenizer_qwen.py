"""The tokenizer of the real default model (Qwen2.5-Coder-0.5B-Instruct GGUF) against REFERENCE.md and transformers."""

from pathlib import Path
from typing import Any

import pytest

from lucid.tokenizer import Tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REFERENCE_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "详细介绍下你自己。"},
]
REFERENCE_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n详细介绍下你自己。<|im_end|>\n<|im_start|>assistant\n"
)
REFERENCE_PROMPT_IDS = [
    151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198,
    113511, 16872, 107828, 1773, 151645, 198, 151644, 77091, 198,
]  # fmt: skip
REFERENCE_RESPONSE_IDS = [
    104198, 101919, 102661, 99718, 104197, 100176, 102064, 104949, 3837, 35946, 99882, 31935, 64559, 99320, 56007,
    1773, 151645,
]  # fmt: skip
REFERENCE_RESPONSE = "我是来自阿里云的大规模语言模型，我叫通义千问。"

TRICKY = [
    "12345678 3.14159 1,000,000 0x1F",
    "a  b   c\t\td\n\n\n  e   \n",
    "  leading and trailing  ",
    "你好，世界！详细介绍下你自己。",
    "emoji 😀👍🏽 🇨🇳 👨‍👩‍👧",
    "def f(x):\n    return x**2  # comment\n\tif x != 0: pass\n",
    "I'm can't WE'LL they've",
    "<|im_start|>user\nhi<|im_end|> <tool_call>{}</tool_call>",
    "<|fim_prefix|>x = <|fim_suffix|>\n<|fim_middle|>",
    "café naïve Ünïcödé",
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "天气 for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
CONVERSATIONS: list[dict[str, Any]] = [
    {"messages": REFERENCE_MESSAGES},
    {"messages": [{"role": "user", "content": "hi"}]},  # the template's own default system prompt
    {"messages": [{"role": "user", "content": "Weather in 北京?"}], "tools": TOOLS},
    {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "content": '{"temp": 21}'},
            {"role": "tool", "content": '{"wind": 3}'},
        ],
        "tools": TOOLS,
    },
    {
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        "add_generation_prompt": False,
    },
]


def gguf_path() -> Path:
    try:
        from lucid.loader import default_model_path  # type: ignore[attr-defined]

        return Path(default_model_path())
    except Exception:  # the loader may not exist yet, or may not find the model
        return Path("/tmp/qwen.gguf")


def read_gguf_tokenizer_fields(path: Path) -> dict[str, Any]:
    """The GGUF's tokenizer.* metadata as plain Python values (what the loader hands `from_gguf_fields`)."""
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(path))
    return {name: field.contents() for name, field in reader.fields.items() if name.startswith("tokenizer.")}


@pytest.fixture(scope="module")
def path() -> Path:
    p = gguf_path()
    if not p.is_file():
        pytest.skip(f"real model not found at {p}")
    return p


@pytest.fixture(scope="module")
def qwen(path: Path) -> Tokenizer:
    return Tokenizer.from_gguf_fields(read_gguf_tokenizer_fields(path), str(path))


@pytest.fixture(scope="module")
def hf_qwen(path: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def test_metadata(qwen: Tokenizer) -> None:
    assert qwen.vocab_size == 151936
    assert qwen.eos_token_id == 151645 and qwen.bos_token_id == qwen.pad_token_id == 151643
    assert qwen.eos_token_ids == [151645, 151643]
    assert {151643, 151644, 151645} <= qwen.special_token_ids
    assert 151657 not in qwen.special_token_ids  # <tool_call> must survive decode(skip_special_tokens=True)
    assert qwen.token_text(102661) == "阿里"  # REFERENCE.md §3's example token
    assert qwen.id_to_token(151645) == "<|im_end|>"


def test_reference_prompt_renders_and_encodes(qwen: Tokenizer) -> None:
    text = qwen.apply_chat_template(REFERENCE_MESSAGES, add_generation_prompt=True)
    assert text == REFERENCE_PROMPT
    assert qwen.encode(text) == REFERENCE_PROMPT_IDS


def test_reference_response_decodes(qwen: Tokenizer) -> None:
    assert qwen.decode(REFERENCE_RESPONSE_IDS) == REFERENCE_RESPONSE
    detok = qwen.detokenizer(REFERENCE_PROMPT_IDS)
    pieces = [detok.add(i) for i in REFERENCE_RESPONSE_IDS] + [detok.flush()]
    assert "".join(pieces) == REFERENCE_RESPONSE
    assert not any("\ufffd" in p for p in pieces)


def test_encode_and_decode_match_transformers(qwen: Tokenizer, hf_qwen: Any) -> None:
    for text in TRICKY:
        ids = qwen.encode(text)
        assert ids == hf_qwen.encode(text, add_special_tokens=False), text
        assert qwen.decode(ids) == hf_qwen.decode(ids, skip_special_tokens=True)
        assert qwen.decode(ids, skip_special_tokens=False) == hf_qwen.decode(ids) == text


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_chat_template_matches_transformers(qwen: Tokenizer, hf_qwen: Any, conversation: dict[str, Any]) -> None:
    kwargs = {"add_generation_prompt": True, **conversation}
    messages = kwargs.pop("messages")
    expected = hf_qwen.apply_chat_template(messages, tokenize=False, **kwargs)
    assert qwen.apply_chat_template(messages, **kwargs) == expected
    if "tools" in conversation:
        assert '"name": "get_weather"' in expected and "天气" in expected  # tools pass through, unicode kept


def test_streaming_matches_decode(qwen: Tokenizer) -> None:
    text = "".join(TRICKY) + REFERENCE_RESPONSE + "<|im_end|>"
    ids = qwen.encode(text)
    for skip in (True, False):
        detok = qwen.detokenizer(skip_special_tokens=skip)
        pieces = [detok.add(i) for i in ids] + [detok.flush()]
        assert "".join(pieces) == qwen.decode(ids, skip_special_tokens=skip)
        assert not any("\ufffd" in p for p in pieces)


def test_save_hf_round_trip(qwen: Tokenizer, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    qwen.save_hf(tmp_path)
    saved = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    reloaded = Tokenizer.from_hf_folder(tmp_path)
    for text in [*TRICKY, REFERENCE_PROMPT]:
        ids = qwen.encode(text)
        assert saved.encode(text, add_special_tokens=True) == ids, text
        assert reloaded.encode(text) == ids
        assert saved.decode(ids, skip_special_tokens=True) == qwen.decode(ids)
    assert saved.apply_chat_template(REFERENCE_MESSAGES, tokenize=False, add_generation_prompt=True) == REFERENCE_PROMPT
    assert reloaded.eos_token_ids == qwen.eos_token_ids and reloaded.special_token_ids == qwen.special_token_ids


def test_openai_shaped_tool_turn_renders_as_transformers_does(qwen: Tokenizer, hf_qwen: Any) -> None:
    """The second turn of an agent loop as the server receives it (OpenAI's shape: call ids, arguments as a JSON
    string) renders as transformers renders that turn with the arguments as an object: the call in <tool_call>,
    the result in <tool_response> inside a user turn."""
    from lucid.server.protocol import ChatMessage

    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    openai_messages = [{"role": "user", "content": "Weather in Paris?"},
                       {"role": "assistant", "content": None, "tool_calls": [call]},
                       {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 31}'}]
    hf_messages = [openai_messages[0],
                   {"role": "assistant", "content": "", "tool_calls": [
                       {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                   {"role": "tool", "content": '{"temperature_c": 31}'}]
    expected = hf_qwen.apply_chat_template(hf_messages, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    rendered = qwen.apply_chat_template([ChatMessage(**m).for_template() for m in openai_messages], tools=TOOLS,
                                        add_generation_prompt=True)
    assert rendered == expected
    assert ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
            '<|im_start|>user\n<tool_response>\n{"temperature_c": 31}\n</tool_response><|im_end|>\n'
            '<|im_start|>assistant\n') in rendered
