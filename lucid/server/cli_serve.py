"""`lucid serve`: its arguments, and running the app under uvicorn with a graceful drain on SIGTERM / SIGINT.

Also runnable alone: `python -m lucid.server.cli_serve --model DIR --port 8000`.

Importing this module is cheap (no torch, FastAPI or uvicorn): `lucid --help` parses these arguments, and
`run_serve` pauses the garbage collector before the heavy imports start (lucid.server.startup_gc says why).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from lucid.cli import add_speculative_arguments, speculative_from_args
from lucid.config import DEFAULT_QUANTIZATION, QUANTIZATION_SCHEMES, EngineConfig, parse_size
from lucid.malloc_tuning import keep_large_blocks
from lucid.server import startup_gc
from lucid.server.settings import DEFAULT_MAX_BODY_BYTES, ServerSettings

if TYPE_CHECKING:
    from lucid.engine.engine_process import EngineSpec
    from lucid.engine.process_engine import EngineLauncher
    from lucid.server.state import ServerState

logger = logging.getLogger("lucid.server")

CPU_MAX_MODEL_LEN = 8192   # a CPU cannot use a 32k context in reasonable time; a GPU gets the model's own
GPU_MAX_MODEL_LEN = 32768


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `lucid serve`; every limit has a default that suits a small model."""
    parser.add_argument("--model", default=None,
                        help="a model folder or .gguf file (default: the default model, Qwen2.5-Coder-0.5B-Instruct)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                        help="names clients may use for the model; /v1/models lists the first "
                             "(default: a short name derived from the model's own)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' on every path but /health and the chat page")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quantization", "-q", default=None, choices=QUANTIZATION_SCHEMES,
                        help=f"weights kept in memory as (default: {DEFAULT_QUANTIZATION} on CPU, none on CUDA)")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                        help="weights and activations dtype (default: the engine's, bfloat16)")
    parser.add_argument("--max-num-seqs", type=int, default=None,
                        help=f"sequences decoded together (default {EngineConfig.max_num_seqs})")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help=f"prompt + output tokens per request (default {CPU_MAX_MODEL_LEN} on CPU, "
                             "the model's own limit on a GPU)")
    parser.add_argument("--kv-cache-memory", type=parse_size, default=None, metavar="SIZE",
                        help="memory for the KV cache, e.g. 512M or 2G (default: what --max-num-seqs sequences of "
                             "--max-model-len tokens can fill, at most half the memory available at start-up)")
    parser.add_argument("--max-queue", type=int, default=None,
                        help=f"waiting requests before new ones get 429 (default {EngineConfig.max_queue})")
    parser.add_argument("--max-num-batched-tokens", type=int, default=None,
                        help=f"tokens computed per engine step; long prompts are prefilled in chunks of this "
                             f"(default {EngineConfig.max_num_batched_tokens})")
    parser.add_argument("--no-prefix-caching", dest="enable_prefix_caching", action="store_false",
                        help="do not share KV blocks between requests with the same prefix")
    parser.add_argument("--cache-reuse", type=int, default=256, metavar="N",
                        help="fill-in-the-middle (editor) requests reuse cached K/V of runs of at least N tokens that "
                             "moved to other positions, as llama.cpp's --cache-reuse (approximate; 0: off; "
                             "default 256)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="compute threads (default: the CPUs this process may use, cgroup quota included)")
    parser.add_argument("--engine-in-process", action="store_true",
                        help="run the engine in the server's own process instead of a process of its own (which "
                             "loads the model while this one starts its web stack: a faster start); for debugging "
                             "and profiling")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="run every step on the eager PyTorch model (no fused C++ decode step); slower, "
                             "for comparison and debugging")
    add_speculative_arguments(parser)
    parser.add_argument("--allowed-origins", nargs="+", default=None, metavar="ORIGIN",
                        help="enable CORS for these origins ('*' for any); off by default")
    parser.add_argument("--max-body-bytes", type=parse_size, default=DEFAULT_MAX_BODY_BYTES, metavar="SIZE",
                        help="largest request body accepted; larger ones get 413 (default 8M)")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM/SIGINT, how long in-flight requests may finish (default 30)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    cluster = parser.add_argument_group("replicas on Ray Serve (needs `pip install lucid[cluster]`)")
    cluster.add_argument("--replicas", type=int, default=1, metavar="N",
                         help="engine replicas behind this server, routed by prompt prefix (default 1: no Ray)")
    cluster.add_argument("--cpus-per-replica", type=int, default=None, metavar="K",
                         help="CPUs (and compute threads) of each replica (default: the cluster's CPUs / N)")
    cluster.add_argument("--ray-address", default=None, metavar="ADDR",
                         help="join this Ray cluster (`ray start --head` prints it) instead of starting a local one")
    cluster.add_argument("--replica-router", default="prefix", choices=["prefix", "default"],
                         help="prefix: lucid's prefix-affinity router; default: Serve's power-of-two choices")


def engine_config_from_args(args: argparse.Namespace, device: str = "cpu") -> EngineConfig:
    limits: dict[str, Any] = {"max_model_len": args.max_model_len
                              or (GPU_MAX_MODEL_LEN if device.startswith("cuda") else CPU_MAX_MODEL_LEN)}
    for name in ("max_num_seqs", "kv_cache_memory", "max_queue", "max_num_batched_tokens"):
        if getattr(args, name, None) is not None:
            limits[name] = getattr(args, name)
    limits["enable_prefix_caching"] = getattr(args, "enable_prefix_caching", True)
    limits["enforce_eager"] = getattr(args, "enforce_eager", False)
    limits["num_threads"] = getattr(args, "threads", None)
    limits["speculative"] = speculative_from_args(args)
    return EngineConfig(**limits)


def _engine_spec(args: argparse.Namespace) -> EngineSpec:
    from lucid.engine.engine_process import EngineSpec

    return EngineSpec(args.model, partial(engine_config_from_args, args), device=args.device, dtype=args.dtype,
                      quantization=args.quantization, log_level=args.log_level.upper())


def _loader(args: argparse.Namespace) -> Callable[[], Any]:
    """The engine loaded in this process (--engine-in-process), in the loading thread while /health answers 503."""
    def load() -> Any:
        from lucid.engine.engine_process import load_engine

        return load_engine(_engine_spec(args))

    return load


def _engine_process_loader(args: argparse.Namespace, launcher: EngineLauncher) -> Callable[[], Any]:
    """The engine in its own process, started already: build this side's tokenizer while it loads, then wait."""
    def load() -> Any:
        from lucid.loader.early_tokenizer import early_tokenizer

        tokenizer = early_tokenizer(args.model, args.dtype or "bfloat16")
        return launcher.wait_ready(tokenizer)

    return load


def _start_engine_process(args: argparse.Namespace) -> EngineLauncher:
    """The engine process, started before this one imports its web stack (lucid.engine.engine_process says why)."""
    from lucid.engine.process_engine import EngineLauncher

    logger.info("Loading %s in the engine process ...", args.model or "the default model")
    return EngineLauncher(_engine_spec(args))


def _resuming_gc(load: Callable[[], Any]) -> Callable[[], Any]:
    """`load`, then the garbage collector back on (run_serve paused it for the start-up), loaded or not."""
    def load_then_resume() -> Any:
        try:
            return load()
        finally:
            startup_gc.resume()

    return load_then_resume


def _cluster_state(args: argparse.Namespace, settings: ServerSettings) -> ServerState | None:
    """The server's state with Ray Serve replicas as its engine (lucid.cluster), or None when Ray is missing."""
    from lucid.server.state import ServerState

    try:
        from lucid.cluster.launch import cluster_loader
        from lucid.cluster.metrics import register_replica_metrics
    except ImportError as exc:
        print(f"lucid serve: --replicas and --ray-address need Ray Serve ({exc}); "
              "install it with: pip install 'lucid[cluster]'", file=sys.stderr)
        return None
    device = args.device or "cpu"
    quantization = args.quantization or (DEFAULT_QUANTIZATION if device == "cpu" else "none")
    loader = cluster_loader(args, engine_config_from_args(args, device), quantization, device)
    state = ServerState(_resuming_gc(loader), settings)
    register_replica_metrics(state)
    return state


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code (0 after a clean drain, 1 if loading failed)."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        engine_config_from_args(args)  # bad limits fail now, not after the model loaded
    except ValueError as exc:
        print(f"lucid serve: {exc}", file=sys.stderr)
        return 2
    settings = ServerSettings(served_model_names=list(args.served_model_name or []), api_key=args.api_key,
                              allowed_origins=list(args.allowed_origins or []), max_body_bytes=args.max_body_bytes,
                              host=args.host, port=args.port, cache_reuse=args.cache_reuse)
    if args.cache_reuse < 0:
        print("lucid serve: --cache-reuse must be 0 (off) or a positive number of tokens", file=sys.stderr)
        return 2
    if args.replicas < 1 or (args.cpus_per_replica is not None and args.cpus_per_replica < 1):
        print("lucid serve: --replicas and --cpus-per-replica must be at least 1", file=sys.stderr)
        return 2
    keep_large_blocks()  # before any other thread exists: the engine thread shares the main arena
    startup_gc.pause()  # until the engine is loaded (_resuming_gc), or serving ends without one
    try:
        return _serve(args, settings)
    finally:
        startup_gc.resume()


def _serve(args: argparse.Namespace, settings: ServerSettings) -> int:
    """The app under uvicorn until it stops; the heavy imports happen here, after run_serve paused the collector."""
    clustered = args.replicas > 1 or bool(args.ray_address)
    launcher = None if clustered or args.engine_in_process else _start_engine_process(args)
    try:
        return _serve_app(args, settings, launcher)
    finally:
        if launcher is not None:
            launcher.stop()  # a no-op after a clean shutdown; a load abandoned (SIGTERM while loading) ends here


def _serve_app(args: argparse.Namespace, settings: ServerSettings, launcher: EngineLauncher | None) -> int:
    import uvicorn

    from lucid.server.app import build_app
    from lucid.server.draining import DrainingServer
    from lucid.server.state import ServerState

    if launcher is not None:
        state = ServerState(_resuming_gc(_engine_process_loader(args, launcher)), settings)
    elif args.engine_in_process:
        state = ServerState(_resuming_gc(_loader(args)), settings)
    else:
        state = _cluster_state(args, settings)
        if state is None:
            return 2
    config = uvicorn.Config(build_app(state), host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=1)
    startup_gc.freeze_imports()  # FastAPI's and lucid's modules: never worth scanning again
    server = DrainingServer(config, state, grace=args.shutdown_timeout)
    state.on_fatal = server.fail
    server.run()
    if server.exit_code == 0 and not server.started:
        return 1  # uvicorn could not start (e.g. the port is taken); it logged why
    return server.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lucid serve", description="OpenAI-compatible server for a Qwen2 model.")
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
