"""`lucid bench`: a serving benchmark against any OpenAI-compatible server, or a `lucid serve` it starts itself.

    lucid bench http://127.0.0.1:8000 --concurrency 4       # a running server (lucid, vLLM, llama.cpp ...)
    lucid bench --model path/to/model --request-rate 2       # starts `lucid serve` for the model, then stops it
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lucid.bench.runner import BenchResult


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `lucid bench`."""
    parser.add_argument("url", nargs="?", default=None,
                        help="base URL of a running server, e.g. http://127.0.0.1:8000 (default: start `lucid serve`)")
    parser.add_argument("--model", default=None,
                        help="with a URL: the model name to request (default: the first at /v1/models); without: "
                             "the model folder or .gguf file to serve (default: the default model)")
    parser.add_argument("--endpoint", choices=["completions", "chat"], default="completions",
                        help="stream /v1/completions (the default) or /v1/chat/completions (--input-len then "
                             "counts the chat template's tokens too, where the server's /tokenize renders it)")
    parser.add_argument("--num-prompts", type=_positive_int, default=32, help="requests to time (default 32)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=_positive_int, default=None,
                      help="keep this many requests in flight (default 1 when no --request-rate)")
    load.add_argument("--request-rate", type=_positive_float, default=None, metavar="R",
                      help="open loop: requests arrive as a Poisson process of R per second")
    parser.add_argument("--input-len", type=_positive_int, default=128, help="prompt tokens per request (default 128)")
    parser.add_argument("--output-len", type=_positive_int, default=128,
                        help="tokens to generate per request, EOS suppressed (default 128)")
    parser.add_argument("--api-key", default=None, help="sent as 'Authorization: Bearer KEY'")
    parser.add_argument("--extra-body", type=_json_object, default=None, metavar="JSON",
                        help='fields added to every request, e.g. \'{"repeat_penalty": 1.0}\'')
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts and arrival times (default 0)")
    parser.add_argument("--serve-args", default="", metavar="ARGS",
                        help="without a URL: more options for `lucid serve`, e.g. --serve-args='--max-num-seqs 16'")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def _settings(args: argparse.Namespace, concurrency: int | None) -> dict[str, Any]:
    return {"endpoint": args.endpoint, "num_prompts": args.num_prompts, "concurrency": concurrency,
            "request_rate": args.request_rate, "input_len": args.input_len, "output_len": args.output_len}


def _run(args: argparse.Namespace, url: str, model: str | None, concurrency: int | None) -> BenchResult:
    from lucid.bench.runner import benchmark

    return asyncio.run(benchmark(url, model, num_prompts=args.num_prompts, input_len=args.input_len,
                                 output_len=args.output_len, concurrency=concurrency, rate=args.request_rate,
                                 endpoint=args.endpoint, api_key=args.api_key, extra_body=args.extra_body,
                                 seed=args.seed))


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark and print its summary; exit code 0 when every request succeeded, 1 otherwise."""
    # Imported here, not above: `lucid serve` builds the whole command line, these arguments included.
    import httpx
    from rich.console import Console

    from lucid.bench.report import print_summary, to_json
    from lucid.bench.server import ServerError, lucid_server

    concurrency = args.concurrency if args.concurrency or args.request_rate else 1
    console = Console(stderr=True)
    url = args.url
    try:
        if args.url:
            url, model = args.url.rstrip("/"), args.model
            result = _run(args, url, model, concurrency)
        else:
            serve_args = [*shlex.split(args.serve_args), *(["--api-key", args.api_key] if args.api_key else [])]
            server = lucid_server(args.model, serve_args)
            console.print(f"starting lucid serve for {args.model or 'the default model'} ...")
            with server:
                console.print(f"ready at {server.url} after {server.startup_s:.1f} s")
                url, model = server.url, None
                result = _run(args, url, model, concurrency)
    except ServerError as exc:
        print(f"lucid bench: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:  # the server could not be reached, or /v1/models failed
        print(f"lucid bench: {url}: {exc}", file=sys.stderr)
        return 2
    summary = result.summary
    if args.json:
        print(to_json(summary, url=url, **_settings(args, concurrency)))
    else:
        load = f"rate {args.request_rate:g}/s" if args.request_rate else f"concurrency {concurrency}"
        print_summary(summary, f"lucid bench: {url}, {args.endpoint}, {load}, {args.num_prompts} requests, "
                               f"{args.input_len} in / {args.output_len} out")
    return 0 if summary.failed == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lucid bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
