"""`lucid generate` and `lucid chat`: answers streamed token by token; only the answer goes to stdout."""

from __future__ import annotations

import argparse
import sys
import time

from lucid.cli import speculative_from_args
from lucid.config import DEFAULT_QUANTIZATION
from lucid.sampling_params import SamplingParams


def _device(args: argparse.Namespace) -> str:
    if args.device:
        return args.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(args: argparse.Namespace):
    from lucid.llm import LLM

    started = time.perf_counter()
    print("loading model…", file=sys.stderr, flush=True)
    device = _device(args)
    quantization = args.quantization or (DEFAULT_QUANTIZATION if device == "cpu" else "none")
    llm = LLM(args.model, dtype=args.dtype, device=device, quantization=quantization,
              enforce_eager=getattr(args, "enforce_eager", False), num_threads=getattr(args, "threads", None),
              speculative=speculative_from_args(args))
    print(f"loaded {llm.engine.model_name} in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    return llm


def _params(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                          max_tokens=args.max_tokens, seed=args.seed)


def _stream(llm, prompt_ids: list[int], params: SamplingParams) -> str:
    """Print the answer as it comes; timings to stderr. Returns the whole answer."""
    started = time.perf_counter()
    first = None
    text, tokens = "", 0
    for out in llm.stream(prompt_ids, params):
        completion = out.outputs[0]
        if first is None and completion.token_ids:
            first = time.perf_counter()
        sys.stdout.write(completion.delta_text)
        sys.stdout.flush()
        text, tokens = completion.text, len(completion.token_ids)
    sys.stdout.write("\n")
    elapsed = time.perf_counter() - started
    decode = elapsed - ((first or started) - started)
    rate = (tokens - 1) / decode if tokens > 1 and decode > 0 else 0.0
    print(f"[{len(prompt_ids)} prompt tokens, {tokens} generated, first token {((first or started) - started):.2f}s,"
          f" {rate:.1f} tok/s]", file=sys.stderr)
    return text


def _messages(system: str | None, history: list[dict]) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + history


def run_generate(args: argparse.Namespace) -> int:
    llm = _load(args)
    if args.raw:
        prompt_ids = llm.tokenizer.encode_prompt(args.prompt)
    else:
        prompt_ids = llm.encode_chat(_messages(args.system, [{"role": "user", "content": args.prompt}]))
    _stream(llm, prompt_ids, _params(args))
    return 0


def run_chat(args: argparse.Namespace) -> int:
    llm = _load(args)
    history: list[dict] = []
    params = _params(args)
    print("Type a message; /new starts over, /exit or Ctrl-D quits.", file=sys.stderr)
    while True:
        try:
            user = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if user.strip() in ("/exit", "/quit"):
            return 0
        if user.strip() == "/new":
            history = []
            continue
        if not user.strip():
            continue
        history.append({"role": "user", "content": user})
        sys.stdout.write("assistant> ")
        answer = _stream(llm, llm.encode_chat(_messages(args.system, history)), params)
        history.append({"role": "assistant", "content": answer})
