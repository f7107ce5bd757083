"""Editor tab-completion latency: a typing session against lucid's /infill and llama.cpp's `llama-server` /infill.

The session: a ~1,500-token file from this repository, the cursor on a line that the user types again a few
characters at a time; at each step the editor sends llama.vscode's /infill body (its defaults: 256 lines of prefix,
64 of suffix, n_cmpl 3, top_k 40, top_p 0.99, n_indent, t_max_predict_ms) with n_predict 32. Both servers get the
same bodies, one after the other (never at once), with the same GGUF and the same number of threads. Each session
starts with one untimed request, as an editor sends on opening a file, so both servers have the file in cache.

    python benchmarks/fim_bench.py                        # lucid, then llama-server if its binary exists
    python benchmarks/fim_bench.py --skip llama-server    # lucid only
    python benchmarks/fim_bench.py --llama-server PATH --threads 2 --json out.json

Reported: end-to-end latency per request (median, p90, mean, max, from the client's side), prompt tokens computed
vs taken from cache (each server's own `timings`), completions returned.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FILE = REPO / "lucid" / "engine" / "scheduler.py"
DEFAULT_LLAMA_SERVER = Path(os.environ.get("LUCID_CACHE_DIR", Path.home() / ".cache" / "lucid")) / "llama-server" \
    / "bin" / "llama-server"
N_PREFIX_LINES, N_SUFFIX_LINES = 256, 64   # llama.vscode's n_prefix / n_suffix settings


@dataclass
class Session:
    bodies: list[dict]
    file_tokens: int = 0


def typing_session(path: Path, requests: int, chars_per_step: int, n_predict: int, n_cmpl: int,
                   start_fraction: float) -> Session:
    """llama.vscode's bodies while the user retypes the text after a cursor placed at `start_fraction` of the file."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    start_line = int(len(lines) * start_fraction)
    start = sum(len(line) for line in lines[:start_line])
    # The typed text runs to the end of a line, so the cursor always has an empty rest of line (typing at its end).
    typed_end = text.find("\n", start + requests * chars_per_step)
    suffix_text = text[typed_end:]
    bodies = []
    for k in range(requests + 1):   # k = 0: the untimed opening request
        before = text[:start + k * chars_per_step]
        done_lines = before.split("\n")
        line_prefix = done_lines[-1]
        prefix_lines = done_lines[:-1][-N_PREFIX_LINES:]
        rest_of_line, _, after = suffix_text.partition("\n")
        suffix_lines = after.split("\n")[:N_SUFFIX_LINES]
        n_indent = len(line_prefix + rest_of_line) - len((line_prefix + rest_of_line).lstrip())
        prompt = "" if not line_prefix.strip() else line_prefix   # llama.vscode drops a blank line's indent
        body = {"id_slot": 0, "input_prefix": "\n".join(prefix_lines) + "\n",
                "input_suffix": rest_of_line + "\n" + "\n".join(suffix_lines) + "\n", "input_extra": [],
                "prompt": prompt, "n_predict": n_predict, "n_cmpl": n_cmpl, "top_k": 40, "top_p": 0.99,
                "stream": False, "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True,
                "t_max_prompt_ms": 500, "t_max_predict_ms": 2500}
        if n_indent:
            body["n_indent"] = n_indent
        bodies.append(body)
    return Session(bodies)


@dataclass
class Result:
    server: str
    latencies_ms: list[float] = field(default_factory=list)
    prompt_n: list[int] = field(default_factory=list)
    cache_n: list[int] = field(default_factory=list)
    completions: list[int] = field(default_factory=list)
    predicted_n: list[list[int]] = field(default_factory=list)
    first_ms: float = 0.0

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)
        p90 = lat[min(len(lat) - 1, int(round(0.9 * (len(lat) - 1))))]
        return {"server": self.server, "requests": len(lat), "median_ms": statistics.median(lat), "p90_ms": p90,
                "mean_ms": statistics.fmean(lat), "max_ms": lat[-1], "first_request_ms": self.first_ms,
                "prompt_n_median": statistics.median(self.prompt_n) if self.prompt_n else None,
                "cache_n_median": statistics.median(self.cache_n) if self.cache_n else None,
                "completions": sorted(set(self.completions)),
                "per_request": {"latency_ms": [round(x) for x in self.latencies_ms], "prompt_n": self.prompt_n,
                                "cache_n": self.cache_n, "predicted_n": self.predicted_n}}


def run_session(name: str, url: str, session: Session) -> Result:
    result = Result(name)
    with httpx.Client(base_url=url, timeout=600) as client:
        for i, body in enumerate(session.bodies):
            started = time.perf_counter()
            response = client.post("/infill", json=body)
            elapsed = (time.perf_counter() - started) * 1e3
            response.raise_for_status()
            data = response.json()
            items = data if isinstance(data, list) else [data]
            if i == 0:
                result.first_ms = elapsed
                continue
            result.latencies_ms.append(elapsed)
            result.completions.append(len(items))
            timings = items[0].get("timings", {})
            result.prompt_n.append(timings.get("prompt_n", 0))
            result.cache_n.append(timings.get("cache_n", 0))
            result.predicted_n.append([item.get("tokens_predicted", 0) for item in items])
    return result


class Launched:
    """A server process, ready once its /health says 200; stopped on exit."""

    def __init__(self, argv: list[str], url: str, env: dict | None = None, timeout: float = 900) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="fim-bench-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {self.proc.returncode}; log: {self.log.name}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{argv[0]} was not ready after {timeout:.0f} s; log: {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def count_tokens(url: str, text: str) -> int:
    return len(httpx.post(f"{url}/tokenize", json={"prompt": text}, timeout=60).json()["tokens"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF file (default: lucid's default model)")
    parser.add_argument("--llama-server", type=Path, default=DEFAULT_LLAMA_SERVER)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="the file being edited (~1,500 tokens)")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--chars-per-step", type=int, default=4)
    parser.add_argument("--n-predict", type=int, default=32)
    parser.add_argument("--n-cmpl", type=int, default=3, help="llama.vscode's max_parallel_completions")
    parser.add_argument("--start", type=float, default=0.6, help="where the cursor starts, as a fraction of lines")
    parser.add_argument("--threads", type=int, default=None, help="compute threads for both servers")
    parser.add_argument("--cache-reuse", type=int, default=256,
                        help="llama-server's --cache-reuse (llama.vscode recommends 256: it shifts the cached suffix "
                             "instead of recomputing it); 0 turns it off")
    parser.add_argument("--port", type=int, default=8110, help="lucid's port; llama-server gets the next one")
    parser.add_argument("--lucid-args", default="", help="extra `lucid serve` flags, e.g. '--speculative ngram'")
    parser.add_argument("--skip", action="append", default=[], choices=["lucid", "llama-server"])
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    from lucid.loader import default_model_path

    gguf = Path(args.model) if args.model else default_model_path(progress=False)
    session = typing_session(args.file, args.requests, args.chars_per_step, args.n_predict, args.n_cmpl, args.start)
    results: list[Result] = []
    threads = ["--threads", str(args.threads)] if args.threads else []

    if "lucid" not in args.skip:
        url = f"http://127.0.0.1:{args.port}"
        server = Launched([sys.executable, "-m", "lucid", "serve", "--model", str(gguf), "--port", str(args.port),
                           "--max-model-len", "8192", *threads, *shlex.split(args.lucid_args)], url,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            session.file_tokens = count_tokens(url, args.file.read_text())
            results.append(run_session("lucid", url, session))
        finally:
            server.stop()

    if "llama-server" not in args.skip:
        if not args.llama_server.is_file():
            print(f"llama-server: skipped, no binary at {args.llama_server} (build it with "
                  "benchmarks/llama_server.py, or pass --llama-server PATH)", file=sys.stderr)
        else:
            port = args.port + 1
            url = f"http://127.0.0.1:{port}"
            # llama.vscode's recommended server flags (--cache-reuse), 4 slots so n_cmpl 3 is allowed,
            # default batch sizes (n_batch sizes the FIM prefix/suffix both servers keep).
            argv = [str(args.llama_server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                    "-c", "32768", "-np", "4", "--cache-reuse", str(args.cache_reuse)]
            if args.threads:
                argv += ["-t", str(args.threads), "-tb", str(args.threads)]
            server = Launched(argv, url)
            try:
                results.append(run_session("llama-server", url, session))
            finally:
                server.stop()

    rows = [r.summary() for r in results]
    print(f"typing session: {args.requests} requests over {args.file.relative_to(REPO)} "
          f"({session.file_tokens or '?'} tokens), {args.chars_per_step} characters a step, "
          f"n_predict {args.n_predict}, n_cmpl {args.n_cmpl}, threads {args.threads or 'default'}, "
          f"llama-server --cache-reuse {args.cache_reuse}")
    print("| server | median ms | p90 ms | mean ms | max ms | first request ms | prompt tokens computed (median) "
          "| cached (median) | completions |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['server']} | {row['median_ms']:.0f} | {row['p90_ms']:.0f} | {row['mean_ms']:.0f} | "
              f"{row['max_ms']:.0f} | {row['first_request_ms']:.0f} | {row['prompt_n_median']} | "
              f"{row['cache_n_median']} | {row['completions']} |")
    if len(rows) == 2:
        print(f"lucid / llama-server: median {rows[0]['median_ms'] / rows[1]['median_ms']:.2f}x, "
              f"p90 {rows[0]['p90_ms'] / rows[1]['p90_ms']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"session": vars(args) | {"file_tokens": session.file_tokens},
                                         "results": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
