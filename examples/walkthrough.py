"""The reference walk-through (REFERENCE.md §2-4), step for step, on lucid's Python API.

The original notebook runs Qwen2-0.5B-Instruct with Hugging Face transformers: load, chat template, tokenize,
generate, detokenize; then it rebuilds `generate` by hand (one forward, softmax with temperature, multinomial or
argmax, loop until <|im_end|>) and looks inside the model (print(model), parameter counts, one weight tensor).
Here every step uses lucid instead; the section numbers are the notebook's.

    python examples/walkthrough.py                      # the default model (Qwen2.5-Coder-0.5B-Instruct GGUF)
    python examples/walkthrough.py --model DIR_OR_GGUF --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import time

import torch

from lucid import LLM, SamplingParams
from lucid.inspect.params import count_parameters

# 2.2: the notebook's messages.
PROMPT = "详细介绍下你自己。"
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": PROMPT}]


def section(title: str) -> None:
    print(f"\n{'=' * 8} {title} {'=' * (70 - len(title))}")


@torch.inference_mode()  # inference only: no autograd graph (HF's generate does the same)
def generate_next_token(model: torch.nn.Module, tokenizer, generate_ids: torch.Tensor, temperature: float = 0.7,
                        debug: bool = False) -> torch.Tensor:
    """§3: one step of decoding. generate_ids (1, T) -> the next id, shape (1, 1)."""
    if debug:
        print("input_ids:", generate_ids)
    # lucid's forward returns the logits themselves (float32, one row per position), not an object with .logits.
    logits = model(generate_ids)                                  # (1, T, vocab)
    if debug:
        print("logits:", logits)
    if temperature > 0:
        # Only the last position predicts the next token; T > 1 flattens the distribution, T < 1 sharpens it.
        probs = torch.softmax(logits[:, -1] / temperature, dim=-1)   # (1, vocab)
        if debug:
            print("probs:", len(probs[0]), probs)
        next_token = torch.multinomial(probs[-1], num_samples=1)   # draw one id, weighted by probability
    else:
        next_token = torch.argmax(logits[:, -1], dim=-1)          # greedy: the single most likely id
    if debug:
        text = tokenizer.decode(next_token.tolist(), skip_special_tokens=False)
        print("next_id:", next_token, ", token:", repr(text))
    return next_token.reshape(1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF folder or .gguf file (default: lucid's default model)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.7, help="for the hand-written loop of §3")
    parser.add_argument("--seed", type=int, default=0, help="fixes torch.multinomial's draws")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_printoptions(threshold=100, edgeitems=3)  # big tensors print as corners with "...", like the notebook

    section("2.1 load the model and tokenizer")
    started = time.perf_counter()
    llm = LLM(args.model, dtype=args.dtype)              # HF folder or GGUF; bfloat16 like the notebook
    model, tokenizer = llm.model, llm.tokenizer
    print(f"loaded {llm.engine.model_name} in {time.perf_counter() - started:.1f}s, "
          f"dtype {next(model.parameters()).dtype}, vocabulary {llm.config.vocab_size:,}")

    section("2.2 chat template")
    # Special markers (<|im_start|>, <|im_end|>) instead of JSON punctuation: they never collide with text.
    input_text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    print(input_text)

    section("2.3 tokenize")
    input_ids = torch.tensor([tokenizer.encode(input_text)])          # (1, 23) for the notebook's model
    attention_mask = torch.ones_like(input_ids)                        # all ones: one sequence, no padding
    print({"input_ids": input_ids, "attention_mask": attention_mask})

    section("2.4 generate")
    # The engine's `generate`: sampling knobs left unset take the model's generation_config, as HF's does.
    [output] = llm.generate([input_ids[0].tolist()], SamplingParams(max_tokens=args.max_new_tokens, seed=args.seed))
    response_ids = output.outputs[0].token_ids                         # only the new ids: the prompt is not echoed
    print("response_ids:", response_ids)

    section("2.5 detokenize")
    print(tokenizer.decode(response_ids, skip_special_tokens=True))

    section("3. one step of generate, with debug prints")
    next_token = generate_next_token(model, tokenizer, input_ids, args.temperature, debug=True)

    section("3. the autoregressive loop")
    end_ids = set(tokenizer.eos_token_ids)                             # <|im_end|> ends an assistant turn
    # A streaming detokenizer, because one Chinese character can span two tokens: printing each token's own
    # decode would show broken bytes until the character is complete.
    stream = tokenizer.detokenizer()
    generate_ids = input_ids
    for _ in range(args.max_new_tokens):
        next_token = generate_next_token(model, tokenizer, generate_ids, args.temperature)
        generate_ids = torch.cat((generate_ids, next_token), dim=1)   # feed the whole sequence back in
        if next_token.item() in end_ids:
            break
        print(stream.add(next_token.item()), end="", flush=True)
    print(stream.flush())
    new_ids = generate_ids[0, input_ids.shape[1]:].tolist()
    print(f"[{len(new_ids)} tokens; the loop recomputes the whole sequence each step, the engine keeps a KV cache]")

    section("4.1 print(model)")
    print(model)

    section("4.2 parameter count")
    report = count_parameters(model)
    for part in report.layer_parts:
        print(f"  {part.name:<26} {part.formula:<16} {part.count:>12,}")
    print(f"  {'one decoder layer':<43} {report.per_layer:>12,}")
    print(f"  {f'{report.num_layers} layers':<43} {report.layers_total:>12,}")
    for part in report.other_parts:
        note = f"  ({part.note})" if part.note else ""
        print(f"  {part.name:<26} {part.formula:<16} {part.count:>12,}{note}")
    # Tied weights are one Parameter, so model.parameters() yields it once and the sums agree.
    print(f"  {'total':<43} {report.total:>12,}   (sum of numel: {sum(p.numel() for p in model.parameters()):,})")

    section("4.2 a weight tensor")
    params = model.state_dict()
    print(params["model.layers.0.self_attn.q_proj.weight"])


if __name__ == "__main__":
    main()
