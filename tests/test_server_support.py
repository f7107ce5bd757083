"""Helpers (not tests) for the server tests: real `lucid serve` subprocesses on free ports, shared per session."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = float(os.environ.get("LUCID_TEST_START_TIMEOUT", "240"))  # seconds; a loaded box is slower


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m lucid serve --port P ARGS...`, its output in a log file."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="lucid-serve-", suffix=".log")[1])
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "lucid", "serve", "--port", str(self.port), *args],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health_status(self) -> int | None:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code
        except httpx.TransportError:
            return None

    def wait_ready(self, timeout: float = START_TIMEOUT) -> list[int]:
        """Poll /health until 200; returns every status seen (503s while loading). Fails with the log."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"lucid serve exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            status = self.health_status()
            if status is not None:
                seen.append(status)
                if status == 200:
                    return seen
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"lucid serve was not ready after {timeout:.0f} s:\n{self.log()[-4000:]}")

    def client(self, api_key: str = "unused", **kwargs: object) -> OpenAI:
        """The official client, without retries (a retried 429 or 503 would hide what the server said)."""
        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120, **kwargs)

    def metrics(self, headers: dict[str, str] | None = None) -> dict[str, float]:
        """Unlabelled samples of /metrics, by name."""
        text = httpx.get(f"{self.url}/metrics", headers=headers, timeout=10).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


_shared: dict[tuple[str, ...], ServerProcess] = {}


def shared_server(*args: str) -> ServerProcess:
    """One ready server per argument list for the whole session (several test files use the same one); all are
    stopped when the test process exits."""
    if args not in _shared or _shared[args].proc.poll() is not None:
        server = ServerProcess(*args)
        _shared[args] = server
        server.wait_ready()
    return _shared[args]


@atexit.register
def stop_shared_servers() -> None:
    """Stop every shared server (at exit, and from conftest's early exit, which skips atexit)."""
    for server in _shared.values():
        server.stop()
    _shared.clear()


TINY_NAMES = ("tiny", "tiny-alias")
TINY_MAX_MODEL_LEN = 512


def tiny_server_args(tiny_model) -> tuple[str, ...]:  # noqa: ANN001 - lucid.testing.TinyModel
    return ("--model", str(tiny_model.hf_dir), "--served-model-name", *TINY_NAMES,
            "--max-model-len", str(TINY_MAX_MODEL_LEN), "--dtype", "float32")
