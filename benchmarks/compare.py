"""lucid vs llama.cpp vs HF transformers on the default model's GGUF, one after another.

    .venv/bin/python benchmarks/compare.py                            # everything (make bench installs the peers)
    .venv/bin/python benchmarks/compare.py --skip transformers --quantization int8 --out docs/compare.md
    .venv/bin/python benchmarks/compare.py --skip transformers --parts speed,quality   # decode + perplexity only

Same GGUF file and the same number of threads everywhere. Each in-process measurement runs in its own process (its
peak RSS is its own): prefill tok/s of a 512-token prompt, single-stream greedy decode tok/s over 256 tokens (EOS
suppressed), load time, peak RSS, perplexity on benchmarks/data/perplexity.txt (llama.cpp through llama-cpp-python).
Then each server is started, timed to its first healthy answer, and streamed at concurrency 1, 4 and 16, greedy and
at temperature 0.7: `lucid serve`, and llama.cpp's own `llama-server` (built from the llama-cpp-python sdist's
sources by benchmarks/llama_server.py) with `-np 16` slots, which batches requests like lucid does. Both servers get
the same context capacity (llama-server `-c`, lucid's KV pool in tokens); their peak RSS is reported.
Last, the machine's memory bandwidth and the share of it lucid's decoding uses.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lucid.bench.report import fmt, markdown_table
from lucid.config import DEFAULT_QUANTIZATION, QUANTIZATION_SCHEMES

STOP_TOKENS = (b"<|im_end|>", b"<|endoftext|>")  # Qwen's: 151645 and 151643 in the default model
NO_EOS_BIAS = -1e4  # added to their logits: never chosen, so every system generates the same number of tokens
PEERS = ("llama", "transformers")
PARTS = ("speed", "quality", "serving")
SAMPLED_TEMPERATURE = 0.7


# ---- children: each runs in its own process and prints one line "RESULT {json}" --------------------------------

def child_lucid(args: argparse.Namespace) -> dict[str, Any]:
    from engine_bench import bench_lucid  # benchmarks/ is on sys.path when this file runs as a script

    return bench_lucid("bfloat16", args.quantization, args.runs, args.decode)


def child_lucid_quality(args: argparse.Namespace) -> dict[str, Any]:
    from quality import TEXT, perplexity

    from lucid.bench.bandwidth import weight_bytes_per_token
    from lucid.llm import LLM

    llm = LLM(None, dtype="bfloat16", quantization=args.quantization)
    text = TEXT.read_text()
    return {"perplexity": perplexity(llm, text), "ppl_tokens": len(llm.tokenizer.encode(text)),
            "bytes_per_token": weight_bytes_per_token(llm.model)}


def _llama(gguf: str, threads: int, **options: Any) -> Any:
    from llama_cpp import Llama

    return Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, verbose=False, **options)


def stop_ids(llm: Any) -> list[int]:
    """The model's end-of-sequence id and Qwen's stop tokens, as this GGUF's vocabulary numbers them."""
    ids = {llm.token_eos()}
    for text in STOP_TOKENS:
        tokens = llm.tokenize(text, add_bos=False, special=True)
        if len(tokens) == 1:
            ids.add(tokens[0])
    return sorted(ids)


def _llama_complete(llm: Any, ids: list[int], max_tokens: int) -> float:
    """Seconds for a greedy completion of `ids` with EOS suppressed, from an empty cache (no prefix reuse)."""
    llm.reset()
    started = time.perf_counter()
    out = llm.create_completion(ids, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0,
                                logit_bias=dict.fromkeys(stop_ids(llm), NO_EOS_BIAS))
    elapsed = time.perf_counter() - started
    if out["usage"]["completion_tokens"] != max_tokens:
        raise RuntimeError(f"llama.cpp generated {out['usage']['completion_tokens']} tokens, asked {max_tokens}")
    return elapsed


def child_llama(args: argparse.Namespace) -> dict[str, Any]:
    """The same method as engine_bench's bench_lucid: prefill = a 1-token completion of a 512-token prompt;
    decode = (N - 1) tokens over (time of N tokens - time of 1 token) after a 16-token prompt."""
    from engine_bench import prompt_ids

    started = time.perf_counter()
    llm = _llama(args.gguf, args.threads, n_ctx=2048, n_batch=512)
    load_s = time.perf_counter() - started

    def encode(text: str) -> list[int]:
        return llm.tokenize(text.encode(), add_bos=False)

    prefill, decode = [], []
    for run in range(args.runs):
        prefill.append(512 / _llama_complete(llm, prompt_ids(encode, 512, run), 1))
        total = _llama_complete(llm, prompt_ids(encode, 16, 100 + run), args.decode)
        first = _llama_complete(llm, prompt_ids(encode, 16, 200 + run), 1)
        decode.append((args.decode - 1) / max(total - first, 1e-9))
    return {"load_s": load_s, "prefill_tok_s": _median(prefill), "decode_tok_s": _median(decode)}


def child_llama_quality(args: argparse.Namespace) -> dict[str, Any]:
    """exp(mean NLL) over the text's tokens, from llama.cpp's logits at every position (one pass)."""
    import numpy as np
    from quality import TEXT

    from lucid.bench.bandwidth import gguf_bytes_per_token

    text = TEXT.read_text()
    probe = _llama(args.gguf, args.threads, n_ctx=64, vocab_only=True)
    ids = probe.tokenize(text.encode(), add_bos=False)
    del probe
    llm = _llama(args.gguf, args.threads, n_ctx=len(ids) + 16, n_batch=512, logits_all=True)
    llm.eval(ids)
    nll = []
    for start in range(0, len(ids) - 1, 128):  # 128 rows at a time: float64 logits of all positions are > 1 GB
        logits = np.asarray(llm.scores[start: min(start + 128, len(ids) - 1)], dtype=np.float64)  # (rows, V)
        top = logits.max(axis=1)
        log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))                       # (rows,)
        targets = np.asarray(ids[start + 1: start + 1 + len(logits)])
        nll.extend(log_z - logits[np.arange(len(logits)), targets])
    return {"perplexity": math.exp(float(np.mean(nll))), "ppl_tokens": len(ids),
            "bytes_per_token": gguf_bytes_per_token(args.gguf)}


def child_transformers(args: argparse.Namespace) -> dict[str, Any]:
    from engine_bench import bench_transformers

    return bench_transformers("bfloat16", args.runs, args.decode)


def child_bandwidth(args: argparse.Namespace) -> dict[str, Any]:
    from lucid.bench.bandwidth import measure_bandwidth, measure_read_bandwidth

    return {"bandwidth": measure_bandwidth(args.threads), "read_bandwidth": measure_read_bandwidth(args.threads)}


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "lucid": child_lucid, "lucid-quality": child_lucid_quality, "llama": child_llama,
    "llama-quality": child_llama_quality, "transformers": child_transformers, "bandwidth": child_bandwidth,
}


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one child in a fresh process; its result (with its peak RSS), or {"error": ...}."""
    command = [sys.executable, __file__, "--child", name, *args.passthrough]
    print(f"[compare] {name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(command, capture_output=True, text=True, env=_thread_env(args.threads))
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"[compare] {name} failed: {proc.stderr[-2000:]}", file=sys.stderr)
        return {"error": tail[:120]}
    return json.loads(line[len("RESULT "):])


def _thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


# ---- servers ---------------------------------------------------------------------------------------------------

def kv_bytes_per_token(gguf: str) -> int:
    """K and V of every layer for one token in bfloat16, from the GGUF's metadata (what lucid's pool holds)."""
    from lucid.loader.gguf_file import open_gguf, read_metadata

    meta = read_metadata(open_gguf(Path(gguf)))
    arch = meta["general.architecture"]
    head_dim = meta[f"{arch}.embedding_length"] // meta[f"{arch}.attention.head_count"]
    return 2 * meta[f"{arch}.block_count"] * meta[f"{arch}.attention.head_count_kv"] * head_dim * 2


def serve_lucid(args: argparse.Namespace) -> dict[str, Any]:
    from lucid.bench.server import lucid_server

    # The same context capacity as llama-server's -c: a KV pool of exactly that many tokens, 16 sequences.
    extra = ["--quantization", args.quantization, "--max-num-seqs", str(args.parallel),
             "--kv-cache-memory", str(args.context * kv_bytes_per_token(args.gguf))]
    return _serve(lucid_server(args.gguf, extra, env=_thread_env(args.threads)), args, extra_body=None)


def serve_llama(args: argparse.Namespace) -> dict[str, Any]:
    """llama.cpp's own llama-server (built from the llama-cpp-python sdist's sources by benchmarks/llama_server.py):
    `-np` parallel slots sharing a `-c` token context, continuous batching across them."""
    from llama_server import ensure_built

    from lucid.bench.server import ServerProcess

    try:
        binary = ensure_built()
    except Exception as exc:  # no compiler, no network: the column stays empty, the others still run
        return {"error": f"llama-server could not be built: {exc}"}
    command = [str(binary), "-m", args.gguf, "--host", "127.0.0.1", "--port", "{port}", "-t", str(args.threads),
               "-tb", str(args.threads), "-c", str(args.context), "-np", str(args.parallel), "--no-webui"]
    # ignore_eos (sent by the bench client) keeps every answer at its full length; the bias makes sure of it.
    stops = _stop_ids_of(args.gguf)
    body = {"logit_bias": {str(eos): NO_EOS_BIAS for eos in stops}} if stops else None
    return _serve(ServerProcess(command, health_path="/health", env=_thread_env(args.threads)), args, body)


def _stop_ids_of(gguf: str) -> list[int]:
    from lucid.loader.gguf_file import open_gguf, read_metadata

    meta = read_metadata(open_gguf(Path(gguf)))
    tokens = meta.get("tokenizer.ggml.tokens") or []
    return [i for i, token in enumerate(tokens) if str(token).encode() in STOP_TOKENS]


def _serve(server: Any, args: argparse.Namespace, extra_body: dict[str, Any] | None) -> dict[str, Any]:
    """Stream greedy and at temperature 0.7 (the peers' other sampling defaults apply), the two in turn at each level
    so that their ratio compares runs seconds apart; the whole sweep `--repeats` times, each cell the median."""
    from lucid.bench.sweep import paired_sweep

    variants = {"": extra_body, "_sampled": {**(extra_body or {}), "temperature": SAMPLED_TEMPERATURE}}
    try:
        with server:
            # Each repeat its own prompts (seeds 10000 apart): none may come from the server's prompt cache.
            runs = [paired_sweep(server.url, args.levels, variants, rounds=args.rounds, input_len=args.serve_input_len,
                                 output_len=args.serve_output_len, seed=10000 * repeat)
                    for repeat in range(args.repeats)]
            peak = server.peak_rss_bytes()
    except Exception as exc:  # a peer that cannot start must not cost the other columns
        print(f"[compare] server failed: {exc}", file=sys.stderr)
        return {"error": str(exc).splitlines()[0][:120]}
    repeats = [{f"serve_{level}{suffix}": summary.output_throughput
                for suffix, by_level in run.items() for level, summary in by_level.items()} for run in runs]
    result: dict[str, Any] = {key: _median([r[key] for r in repeats]) for key in repeats[0]}
    result.update({"startup_s": server.startup_s, "server_rss": peak, "repeats": repeats,
                   "ttft_ms": _median([run[""][args.levels[0]].ttft.median for run in runs]),
                   "failed": sum(s.failed for run in runs for by_level in run.values() for s in by_level.values())})
    return result


# ---- the report ------------------------------------------------------------------------------------------------

def _cell(result: dict[str, Any], key: str, digits: int, scale: float = 1.0) -> str:
    value = result.get(key)
    return "-" if value is None else fmt(value * scale, digits)


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> str:
    x, y = a.get(key), b.get(key)
    if x is None or not y or math.isnan(x) or math.isnan(y):
        return "-"
    return f"{x / y:.2f}x"


def metric_rows(args: argparse.Namespace) -> list[tuple[str, str, int, float]]:
    """(label, result key, decimals, scale) for each row of the table."""
    return [
        ("prefill tok/s (512-token prompt)", "prefill_tok_s", 0, 1.0),
        (f"decode tok/s (single stream, {args.decode} tokens)", "decode_tok_s", 1, 1.0),
        ("load time, in-process (s)", "load_s", 1, 1.0),
        ("peak RSS, in-process (GB)", "peak_rss", 2, 1e-9),
        ("server start-up to healthy (s)", "startup_s", 1, 1.0),
        (f"server peak RSS, {args.context}-token context, {args.parallel} slots (GB)", "server_rss", 2, 1e-9),
        (f"TTFT, served, c={args.levels[0]}, {args.serve_input_len}-token prompt (median ms)", "ttft_ms", 0, 1.0),
        *[(f"served output tok/s, c={level}, greedy", f"serve_{level}", 1, 1.0) for level in args.levels],
        *[(f"served output tok/s, c={level}, temperature {SAMPLED_TEMPERATURE}", f"serve_{level}_sampled", 1, 1.0)
          for level in args.levels],
        ("perplexity (benchmarks/data/perplexity.txt)", "perplexity", 3, 1.0),
    ]


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    """Rows are metrics; columns are the systems, then lucid's ratio to each peer."""
    names = {"lucid": f"lucid ({args.quantization})", "llama": "llama.cpp", "transformers": "transformers bf16"}
    columns = [n for n in ("lucid", "llama", "transformers") if n in results]
    header = ["", *(names[c] for c in columns), *(f"lucid / {names[c]}" for c in columns[1:])]
    rows = []
    for label, key, digits, scale in metric_rows(args):
        cells = [_cell(results[c], key, digits, scale) for c in columns]
        if any(cell != "-" for cell in cells):
            rows.append([label, *cells, *(_ratio(results["lucid"], results[c], key) for c in columns[1:])])
    return markdown_table(header, rows)


def failure_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"- {name}: {part} failed: {result[key]}" for name, result in results.items()
             for key, part in (("error", "in-process run"), ("quality_error", "perplexity"), ("server_error", "server"))
             if key in result]
    return lines + [f"- {name}: {result['failed']} served requests failed" for name, result in results.items()
                    if result.get("failed")]


def bandwidth_lines(results: dict[str, dict[str, Any]], measured: dict[str, float], threads: int) -> list[str]:
    copy, read = measured.get("bandwidth"), measured.get("read_bandwidth")
    if not copy or not read:
        return []
    lines = [f"Memory bandwidth, {threads} threads, 512 MiB: {read / 1e9:.1f} GB/s reading (torch sum), "
             f"{copy / 1e9:.1f} GB/s copying (torch copy, read + write)."]
    for name in ("lucid", "llama"):
        r = results.get(name, {})
        if r.get("bytes_per_token") and r.get("decode_tok_s"):
            used = r["bytes_per_token"] * r["decode_tok_s"]
            lines.append(f"{'lucid' if name == 'lucid' else 'llama.cpp'} decode reads {r['bytes_per_token'] / 1e6:.0f} "
                         f"MB of weights per token: {used / 1e9:.1f} GB/s effective = {used / read:.0%} of the read "
                         f"bandwidth ({used / copy:.0%} of the copy bandwidth).")
    return lines


def scaling_lines(results: dict[str, dict[str, Any]], levels: list[int]) -> list[str]:
    """Each server's scaling from the lowest to the highest level and its sampled / greedy ratio: the ratio of the
    medians, then each repeat's own ratio (its two figures measured minutes apart at most)."""
    lines = []
    low, high = f"serve_{levels[0]}", f"serve_{levels[-1]}"
    for name in ("lucid", "llama"):
        r = results.get(name, {})
        server = "lucid" if name == "lucid" else "llama-server"
        pairs = [(high, low, f"greedy, at c={levels[-1]} / c={levels[0]}"),
                 (high + "_sampled", low + "_sampled",
                  f"temperature {SAMPLED_TEMPERATURE}, at c={levels[-1]} / c={levels[0]}"),
                 (high + "_sampled", high, f"at c={levels[-1]}, temperature {SAMPLED_TEMPERATURE} / greedy")]
        for top, bottom, what in pairs:
            if r.get(top) and r.get(bottom):
                each = ", ".join(f"{run[top] / run[bottom]:.2f}" for run in r.get("repeats", []))
                lines.append(f"{server} served output tok/s, {what}: {r[top] / r[bottom]:.2f}x"
                             + (f" (each repeat: {each})." if each else "."))
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", default="", help="comma-separated peers to leave out: llama,transformers")
    parser.add_argument("--quantization", default=DEFAULT_QUANTIZATION,
                        help=f"lucid's weight format: {', '.join(QUANTIZATION_SCHEMES)} "
                             f"(default {DEFAULT_QUANTIZATION})")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run: {', '.join(PARTS)} (all): in-process prefill/decode/load, "
                             "perplexity and bytes per token, the served sweep")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every system")
    parser.add_argument("--runs", type=int, default=3, help="in-process runs; the median is reported (3)")
    parser.add_argument("--decode", type=int, default=256, help="decode tokens (256)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="serving concurrencies (1 4 16)")
    parser.add_argument("--rounds", type=int, default=2, help="serving requests per level = rounds x concurrency")
    parser.add_argument("--repeats", type=int, default=3,
                        help="served sweeps per server, one after another; each served cell is their median (3)")
    parser.add_argument("--context", type=int, default=8192,
                        help="served context capacity in tokens: llama-server -c, lucid's KV pool (8192)")
    parser.add_argument("--parallel", type=int, default=16,
                        help="llama-server -np slots and lucid --max-num-seqs (16)")
    parser.add_argument("--serve-input-len", type=int, default=128)
    parser.add_argument("--serve-output-len", type=int, default=128)
    parser.add_argument("--gguf", default=None, help=argparse.SUPPRESS)  # the default model's; set for the children
    parser.add_argument("--out", default=None, help="also write the markdown here")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip - set(PEERS):
        parser.error(f"--skip takes {', '.join(PEERS)}")
    args.parts = {s.strip() for s in args.parts.split(",") if s.strip()}
    if not args.parts or args.parts - set(PARTS):
        parser.error(f"--parts takes {', '.join(PARTS)}")
    if args.gguf is None:
        from lucid.loader import default_model_path

        args.gguf = str(default_model_path(progress=True))
    args.passthrough = ["--quantization", args.quantization, "--threads", str(args.threads), "--runs",
                        str(args.runs), "--decode", str(args.decode), "--gguf", args.gguf]
    return args


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """All numbers of one system: in-process speed, then (not for transformers) quality and serving.
    A failed part leaves its cells empty and its error under "error" / "quality_error" / "server_error"."""
    result = run_child(name, args) if "speed" in args.parts else {}
    if name == "transformers":
        return result
    quality = run_child(f"{name}-quality", args) if "quality" in args.parts else {}
    quality.pop("peak_rss", None)
    if "error" in quality:
        quality["quality_error"] = quality.pop("error")
    served = {}
    if "serving" in args.parts:
        served = serve_lucid(args) if name == "lucid" else serve_llama(args)
    if "error" in served:
        served["server_error"] = served.pop("error")
    return {**result, **quality, **served}


def main() -> int:
    args = parse_args()
    if args.child:
        result = CHILDREN[args.child](args)
        result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print("RESULT " + json.dumps(result))
        return 0
    started = time.perf_counter()
    bandwidth = run_child("bandwidth", args)
    results = {name: measure(name, args) for name in ("lucid", "llama", "transformers") if name not in args.skip}
    lines = [f"## lucid vs peers: {os.path.basename(args.gguf)}, {args.threads} threads", "",
             report(results, args), "",
             "Ratios are lucid / peer: above 1 is better for tok/s, worse for time, memory and perplexity. Served: "
             f"{args.serve_input_len} prompt / {args.serve_output_len} output tokens per request, streamed "
             f"/v1/completions, {args.rounds} x concurrency requests per level (EOS suppressed), greedy and sampled in "
             f"turn at each level; each served figure is the median of {args.repeats} sweeps.", "",
             *scaling_lines(results, args.levels), "",
             *bandwidth_lines(results, bandwidth, args.threads), "", *failure_lines(results), "",
             f"Took {(time.perf_counter() - started) / 60:.1f} min. "
             f"Command: `{shlex.join([os.path.relpath(sys.executable), *sys.argv])}`"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
