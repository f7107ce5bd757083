"""`lucid inspect` and `lucid trace`: argument definitions and the functions `lucid/cli.py` dispatches to."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lucid.config import DEFAULT_QUANTIZATION, QUANTIZATION_SCHEMES

DTYPES = ["bfloat16", "float32", "float16"]


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", "-m", default=None,
                        help="a Hugging Face folder, a .gguf file, or nothing for the default model")
    source.add_argument("--config", default=None,
                        help="a config.json: shapes and counts without weights (built on the meta device)")
    parser.add_argument("--tensor", default=None, help="show one tensor, e.g. model.layers.0.self_attn.q_proj.weight")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--dtype", default="bfloat16", choices=DTYPES,
                        help="dtype to load in (and size the KV cache for)")


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt")
    parser.add_argument("--model", "-m", default=None,
                        help="a Hugging Face folder, a .gguf file, or nothing for the default model")
    parser.add_argument("--steps", type=int, default=16, help="tokens to generate at most (default 16)")
    parser.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model's)")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--system", default=None, help="system prompt (default: the chat template's)")
    parser.add_argument("--raw", action="store_true", help="no chat template: continue the text as given")
    parser.add_argument("--show", type=int, default=5, help="candidates shown per step (default 5)")
    constraint = parser.add_mutually_exclusive_group()
    constraint.add_argument("--json-schema", default=None, metavar="SCHEMA",
                            help="constrain the output to this JSON schema (JSON text, or @file.json); "
                                 "each step then shows how many tokens the grammar allowed")
    constraint.add_argument("--regex", default=None, help="constrain the output to this regular expression")
    constraint.add_argument("--choice", action="append", default=None, help="constrain to one of these (repeat)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--lens", action="store_true",
                        help="each step's logit lens: the top tokens after the embedding and after every layer")
    parser.add_argument("--attention", action="store_true",
                        help="each step's attention: which earlier positions the choosing query looked at")
    parser.add_argument("--quantization", "-q", default=None, choices=QUANTIZATION_SCHEMES,
                        help=f"weights as lucid generate keeps them (default: {DEFAULT_QUANTIZATION} on CPU)")
    parser.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    parser.add_argument("--speculative", default=None, metavar="ngram[:K]",
                        help="mark the tokens n-gram speculative decoding would draft and keep")


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def run_inspect(args: argparse.Namespace) -> int:
    from lucid.inspect.render import print_report, print_tensor
    from lucid.inspect.report import inspect_model, meta_model
    from lucid.inspect.tensors import find_tensor, summarize_tensor
    from lucid.loader import parse_dtype

    dtype = parse_dtype(args.dtype)
    if args.config:
        from lucid.config import ModelConfig

        config = ModelConfig.from_json(args.config)
        model, name, formats = meta_model(config, dtype), args.config, {}
    else:
        from lucid.loader import load

        loaded = load(args.model, dtype=dtype)
        model, config, name, formats = loaded.model, loaded.config, loaded.name, loaded.stored_formats

    if args.tensor:
        try:
            tensor = find_tensor(model, args.tensor)
        except KeyError as exc:
            print(f"lucid inspect: {exc.args[0]}", file=sys.stderr)
            return 2
        summary = summarize_tensor(args.tensor, tensor, stored_format=formats.get(args.tensor))
        _print_json(summary.to_dict()) if args.json else print_tensor(summary)
        return 0

    report = inspect_model(model, config, name, formats, dtype, from_config=bool(args.config))
    _print_json(report.to_dict()) if args.json else print_report(report)
    return 0


def _constraint(args: argparse.Namespace) -> Any:
    """The GrammarSpec of --json-schema / --regex / --choice, or None."""
    from lucid.structured.spec import GrammarSpec

    if args.json_schema:
        text = args.json_schema
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        return GrammarSpec.json_schema(json.loads(text), param="--json-schema")
    if args.regex:
        return GrammarSpec.regex(args.regex, param="--regex")
    if args.choice:
        return GrammarSpec.choice(args.choice, param="--choice")
    return None


def run_trace(args: argparse.Namespace) -> int:
    from lucid.inspect.trace import new_trace, prompt_for, run_trace_loop
    from lucid.inspect.trace_render import print_prompt, print_step, print_summary
    from lucid.loader import load
    from lucid.sampling_params import SamplingParams

    if args.steps < 1:
        print("lucid trace: --steps must be at least 1", file=sys.stderr)
        return 2
    loaded = load(args.model, dtype=args.dtype)
    quantization = args.quantization or DEFAULT_QUANTIZATION
    if quantization != "none":  # the same weights `lucid generate` and `lucid serve` run by default
        from lucid.quantize import fuse_and_quantize

        fuse_and_quantize(loaded.model, quantization)
    # Unset knobs take the model's generation_config defaults, exactly as the engine resolves them.
    try:
        structured = _constraint(args)
    except (ValueError, OSError) as exc:
        print(f"lucid trace: {exc}", file=sys.stderr)
        return 2
    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                            max_tokens=args.steps, structured=structured).with_defaults(loaded.generation_config)
    trace = new_trace(loaded.tokenizer, prompt_for(loaded.tokenizer, args.prompt, args.system, args.raw), params,
                      args.steps)
    marker = None
    if args.speculative:
        from lucid.engine.speculative import SpeculativeConfig
        from lucid.inspect.trace_spec import DraftMarker

        try:
            marker = DraftMarker(SpeculativeConfig.parse(args.speculative), trace.prompt_ids, args.steps)
        except ValueError as exc:
            print(f"lucid trace: --speculative: {exc}", file=sys.stderr)
            return 2
    from rich.console import Console

    looks: list[dict[str, Any]] = []   # the glass box per step (--lens / --attention)
    console = Console()

    def look(step: Any) -> None:
        if not (args.lens or args.attention):
            return
        from lucid.glassbox.render import print_attention, print_lens
        from lucid.glassbox.trace_views import explain_step

        context = trace.prompt_ids + trace.output_ids[:step.index]
        lens, attention = explain_step(loaded.model, loaded.tokenizer, context, step.chosen_id, args.lens,
                                       args.attention)
        looks.append({"step": step.index, "lens": lens.to_dict() if lens else None,
                      "attention": attention.to_dict() if attention else None})
        if not args.json:
            if lens:
                print_lens(lens, console)
            if attention:
                print_attention(attention, console)

    from lucid.structured.spec import StructuredOutputError

    try:
        if args.json:
            data = run_trace_loop(loaded.model, loaded.tokenizer, trace, params, args.show, on_step=look,
                                  marker=marker).to_dict()
            _print_json(data | ({"glassbox": looks} if looks else {}))
            return 0
        print_prompt(trace, console)
        run_trace_loop(loaded.model, loaded.tokenizer, trace, params, args.show,
                       on_step=lambda s: (print_step(s, console), look(s)), marker=marker)
    except StructuredOutputError as exc:  # the grammar engine's message: the schema or regex is the user's
        print(f"lucid trace: {exc}", file=sys.stderr)
        return 2
    print_summary(trace, console)
    if marker is not None:
        console.print(marker.summary, style="bold cyan")
    return 0
