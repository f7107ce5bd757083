"""A tiny random Qwen2 for tests, written both as a Hugging Face folder and as a GGUF file with the same weights.

    python -m lucid.testing OUT_DIR     # writes OUT_DIR/hf and OUT_DIR/tiny-qwen2.gguf

The tokenizer is a real byte-level BPE (any text encodes) trained on the small corpus below, with Qwen's special
tokens appended after the BPE vocabulary, as Qwen does. Every weight the GGUF stores quantized is first rounded to
its quantization grid, so the HF folder holds exactly what the GGUF dequantizes to: both loaders must agree exactly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lucid.config import ModelConfig

if TYPE_CHECKING:
    from tokenizers import Tokenizer as BackendTokenizer

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
# ChatML as Qwen2-Instruct uses it: a default system message when the conversation has none.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
BPE_VOCAB_SIZE = 800
VOCAB_MULTIPLE = 64

# How the GGUF stores each tensor (per layer for blk.N): every type the default model holds (Q5_0, Q8_0, Q6_K, Q4_K,
# F32) plus F16 and BF16. K-quants need rows of 256, so only ffn_down (rows of intermediate_size) can use them.
GLOBAL_TYPES = {"token_embd.weight": "Q5_0", "output.weight": "Q8_0", "output_norm.weight": "F32"}
LAYER_TYPES = [
    {"attn_q": "Q5_0", "attn_k": "Q5_0", "attn_v": "Q8_0", "attn_output": "F16",
     "ffn_gate": "Q5_0", "ffn_up": "Q8_0", "ffn_down": "Q6_K"},
    {"attn_q": "Q8_0", "attn_k": "Q5_0", "attn_v": "Q5_0", "attn_output": "BF16",
     "ffn_gate": "Q8_0", "ffn_up": "F32", "ffn_down": "Q4_K"},
]

_CORPUS = """\
The quick brown fox jumps over the lazy dog.
Hello, world! How are you today?
I am a language model. I answer questions and write code.
Large language models predict the next token from the tokens before it.
Tokenization turns text into integers; detokenization turns them back into text.
The attention mask matters when sequences of different lengths share a batch.
A key-value cache keeps past keys and values so each new token costs one step.
Temperature flattens or sharpens the distribution before sampling.
Greedy decoding picks the token with the highest logit at every step.
Please summarize the following paragraph in one sentence.
What is the capital of France? The capital of France is Paris.
Write a haiku about autumn leaves falling on a quiet river.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 1024 3.14159 2.71828 -7 1e-6
Dates like 2024-05-17 and times like 13:45:09 appear in logs.
Email me at someone@example.com or visit https://example.org/docs?page=2.
你好，世界！
我是一个人工智能助手，很高兴为你服务。
详细介绍下你自己。
今天天气很好，我们去公园散步吧。
机器学习是人工智能的一个分支。
大规模语言模型可以回答问题、写代码和翻译文本。
请用中文回答下面的问题。
北京是中国的首都，上海是最大的城市。
春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。
我叫通义千问，是阿里云开发的语言模型。
日本語も少し: こんにちは、ありがとう。
Emoji time 😀😃😄 🚀🔥✨ 👍🏽 ❤️ 🇨🇳 🐍 🦀
Café, naïve, façade, résumé, Ångström, Straße, Ελληνικά, Русский текст.
def fibonacci(n: int) -> int:
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)
for i in range(10):
    print(f"{i}: {fibonacci(i)}")
import numpy as np
x = np.zeros((3, 4), dtype=np.float32)
class Stack:
    def __init__(self):
        self.items = []
    def push(self, item):
        self.items.append(item)
    def pop(self):
        return self.items.pop()
#include <stdio.h>
int main(void) { printf("hello\\n"); return 0; }
fn main() { let v: Vec<i32> = (0..10).collect(); println!("{:?}", v); }
const add = (a, b) => a + b;  // arrow function
SELECT name, COUNT(*) FROM users WHERE age > 30 GROUP BY name ORDER BY 2 DESC;
{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}
<html><body><h1>Title</h1><p>Paragraph &amp; more</p></body></html>
git commit -m "fix: handle empty input" && git push origin main
$ pip install torch safetensors tokenizers
    return {"status": "ok", "tokens": [1, 2, 3]}
if (x != null && y >= 0) { z = x * y; } else { z = -1; }
"""

_WORDS = ("model token cache batch layer weight vector matrix tensor prompt answer question server client request "
          "response stream sample logit softmax norm rotary embedding attention head query key value").split()
_ZH_WORDS = ("模型 词元 缓存 批次 权重 向量 矩阵 张量 提示 回答 问题 服务器 客户端 请求 响应 采样 注意力 嵌入").split()


def corpus_lines() -> list[str]:
    """A few hundred lines of mixed English, Chinese, emoji and code (fixed; no randomness)."""
    lines = _CORPUS.splitlines()
    for i, word in enumerate(_WORDS):
        other = _WORDS[(i * 7 + 3) % len(_WORDS)]
        zh, zh2 = _ZH_WORDS[i % len(_ZH_WORDS)], _ZH_WORDS[(i * 5 + 1) % len(_ZH_WORDS)]
        lines += [
            f"The {word} feeds the {other}; each {word} has {i + 2} parts.",
            f"def get_{word}_{other}(self, index: int = {i}) -> list[str]:",
            f"    return [self.{word}[index], self.{other}[{i + 1}]]  # {word} then {other}",
            f"这个{zh}和那个{zh2}不一样，第{i + 1}个{zh}更重要。",
            f"Question {i}: why does the {word} matter? Answer: because the {other} needs it. 🙂",
            f"{word.upper()}_{i} = {i * 37 % 101}; {other}_total += {word.upper()}_{i}",
        ]
    return lines


def build_tokenizer() -> BackendTokenizer:
    """Train the byte-level BPE and append Qwen's special tokens after its vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from lucid.tokenizer.gguf_vocab import pre_tokenizer_for

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    # The GGUF says tokenizer.ggml.pre = "qwen2", so the HF folder must split exactly as that loader does.
    tok.pre_tokenizer = pre_tokenizer_for("qwen2", "tiny model")
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB_SIZE, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_lines(), trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def _random_weights(config: ModelConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """HF name -> float32 array. Most weights have std 0.02; q/k are larger so attention is far from uniform
    (position and cache bugs then change the output), and lm_head is larger so the logits spread out."""
    from lucid.loader.validate import expected_shapes

    out = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith("norm.weight"):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif "q_proj" in name or "k_proj" in name:
            w = 0.15 * rng.standard_normal(shape)
        elif name == "lm_head.weight":
            w = 0.3 * rng.standard_normal(shape)
        else:
            w = 0.02 * rng.standard_normal(shape)
        out[name] = w.astype(np.float32)
    return out


def _random_kquant_bytes(qtype: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random but valid Q6_K/Q4_K blocks (the gguf package cannot quantize to K-quants): random codes and scales,
    with the fp16 super-block scales set so the values have std ~0.02."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    blocks = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    if qtype == "Q6_K":  # ql[128] qh[64] scales[16] (int8) d (fp16): keep the scales small and positive
        blocks[:, 192:208] = rng.integers(1, 16, size=(blocks.shape[0], 16), dtype=np.uint8)
        blocks[:, 208:210] = np.full((blocks.shape[0], 1), 1.2e-4, dtype=np.float16).view(np.uint8)
    else:  # Q4_K: d (fp16) dmin (fp16) scales[12] qs[128]; the min term roughly centres the values on zero
        blocks[:, 0:2] = np.full((blocks.shape[0], 1), 1.0e-4, dtype=np.float16).view(np.uint8)
        blocks[:, 2:4] = np.full((blocks.shape[0], 1), 7.5e-4, dtype=np.float16).view(np.uint8)
    return blocks.reshape(rows, -1)


def _gguf_tensors(weights: dict[str, np.ndarray], config: ModelConfig, rng: np.random.Generator) -> dict:
    """GGUF name -> (stored array, type name); rounds `weights` in place to what the GGUF stores."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    from lucid.loader.names import hf_to_gguf

    types = dict(GLOBAL_TYPES)
    for i in range(config.num_hidden_layers):
        for part, qtype in LAYER_TYPES[i % len(LAYER_TYPES)].items():
            types[f"blk.{i}.{part}.weight"] = qtype
    stored = {}
    for hf_name, w in weights.items():
        name = hf_to_gguf(hf_name)
        qtype = types.get(name, "F32")  # norms and biases
        gtype = GGMLQuantizationType[qtype]
        if qtype == "F32":
            data = w
        elif qtype == "F16":
            data = w.astype(np.float16)
        elif qtype in ("Q6_K", "Q4_K"):
            data = _random_kquant_bytes(qtype, *w.shape, rng)
        else:
            data = quantize(w, gtype)
        weights[hf_name] = dequantize(data, gtype).reshape(w.shape).astype(np.float32)
        stored[name] = (data, qtype)
    return stored


def _gguf_vocab(tok: BackendTokenizer) -> tuple[list[str], list[int], list[str]]:
    """Tokens (padded with [PAD{id}] to VOCAB_MULTIPLE), their types and the merges, as GGUF stores them."""
    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "token ids must be contiguous"
    types = [3 if t in SPECIAL_TOKENS else 1 for t in tokens]  # 3 = CONTROL, 1 = NORMAL
    padded = -(-len(tokens) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    tokens += [f"[PAD{i}]" for i in range(len(tokens), padded)]
    types += [5] * (padded - len(types))  # 5 = UNUSED
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    return tokens, types, merges


def _write_hf(folder: Path, config: ModelConfig, weights: dict[str, np.ndarray], tok: BackendTokenizer,
              ids: dict[str, int]) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({n: torch.from_numpy(w) for n, w in weights.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")
    generation = {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                  "pad_token_id": ids["<|endoftext|>"]}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    tok.save(str(folder / "tokenizer.json"))
    added = {str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True} for t in SPECIAL_TOKENS}
    tokenizer_config = {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": "<|endoftext|>",
        "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
        "errors": "replace", "model_max_length": config.max_position_embeddings, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")


def gguf_writer(path: Path, arch: str, name: str, config: ModelConfig, tok: BackendTokenizer,
                ids: dict[str, int]) -> Any:
    """A gguf.GGUFWriter holding a tiny model's hyperparameters, its byte-level BPE vocabulary and the chat template;
    the caller adds what its family needs more, the tensors, then `finish_gguf`."""
    import gguf

    tokens, types, merges = _gguf_vocab(tok)
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_name(name)
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_freq_base(config.rope_theta)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types(types)
    w.add_bos_token_id(ids["<|endoftext|>"])
    w.add_eos_token_id(ids["<|im_end|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    return w


def finish_gguf(w: Any) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _write_gguf(path: Path, config: ModelConfig, stored: dict, tok: BackendTokenizer, ids: dict[str, int]) -> None:
    import gguf

    w = gguf_writer(path, "qwen2", "Tiny Qwen2", config, tok, ids)
    w.add_pad_token_id(ids["<|endoftext|>"])
    for name, (data, qtype) in stored.items():
        # F32/F16 arrays carry their type; quantized bytes need it spelled out (the writer derives the shape).
        raw = None if qtype in ("F32", "F16") else gguf.GGMLQuantizationType[qtype]
        w.add_tensor(name, data, raw_dtype=raw)
    finish_gguf(w)


@dataclass
class TinyModel:
    """Where make_tiny_model wrote the model, and its config."""

    hf_dir: Path
    gguf_path: Path
    config: ModelConfig
    gguf_types: dict[str, str] = field(default_factory=dict)  # GGUF tensor name -> stored type


def tiny_config(vocab_size: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
                       max_position_embeddings=4096, tie_word_embeddings=False, torch_dtype="float32")


def make_tiny_model(out_dir: Path, seed: int = 0) -> TinyModel:
    """Write a tiny random Qwen2 to out_dir/hf (fp32 safetensors) and out_dir/tiny-qwen2.gguf (same weights)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    vocab = -(-tok.get_vocab_size(with_added_tokens=True) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    config = replace(tiny_config(vocab), bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
    rng = np.random.default_rng(seed)
    weights = _random_weights(config, rng)
    stored = _gguf_tensors(weights, config, rng)
    tiny = TinyModel(hf_dir=out_dir / "hf", gguf_path=out_dir / "tiny-qwen2.gguf", config=config,
                     gguf_types={name: qtype for name, (_, qtype) in stored.items()})
    _write_hf(tiny.hf_dir, config, weights, tok, ids)
    _write_gguf(tiny.gguf_path, config, stored, tok, ids)
    return tiny


def rewrite_gguf(src: Path, dst: Path, arch: str = "qwen2", drop_fields: tuple[str, ...] = (),
                  tensors: Callable[[str, np.ndarray], np.ndarray | None] | None = None,
                  extra: dict[str, np.ndarray] | None = None) -> Path:
    """Copy a GGUF, dropping keys and changing/dropping tensors (`tensors` returns None to drop one): for tests of
    broken or unusual files."""
    import gguf

    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(str(dst), arch=arch)
    for key, value in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in drop_fields:
            continue
        key = key.replace("qwen2.", f"{arch}.", 1)
        sub_type = value.types[-1] if value.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value.contents(), value.types[0], sub_type=sub_type)
    for t in reader.tensors:
        data = np.array(t.data)
        if tensors is not None and (data := tensors(t.name, data)) is None:
            continue
        float_type = t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
        writer.add_tensor(t.name, data, raw_dtype=None if float_type else t.tensor_type)
    for name, data in (extra or {}).items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lucid.testing OUT_DIR")
    made = make_tiny_model(Path(sys.argv[1]))
    print(f"hf:   {made.hf_dir}\ngguf: {made.gguf_path}")
