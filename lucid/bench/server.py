"""A server under test as a subprocess: started on a free loopback port, ready when its health check says 200."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    """The server exited or never became healthy; the message ends with its log."""


class ServerProcess:
    """`command` (with `{port}` filled in) run in the background, its output in a temporary log file.

    Use as a context manager: entering waits until `health_path` answers 200 and records `startup_s`, the time from
    launch to that first healthy answer; leaving stops the process (SIGTERM, then SIGKILL).
    """

    def __init__(self, command: Sequence[str], health_path: str = "/health", timeout: float = 600.0,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [part.format(port=self.port) for part in command]
        self.health_path = health_path
        self.timeout = timeout
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.startup_s = float("nan")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="lucid-bench-server-", suffix=".log")[1])

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def start(self) -> ServerProcess:
        started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = started + self.timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{' '.join(self.command)} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + self.health_path, timeout=2).status_code == 200:
                    self.startup_s = time.perf_counter() - started
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"{' '.join(self.command)} was not healthy after {self.timeout:.0f} s:\n{self.log_tail()}")

    def peak_rss_bytes(self) -> int | None:
        """The process's peak resident memory so far (Linux: VmHWM), or None where it cannot be read."""
        if self.proc is None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if exc is None:
            self.log_path.unlink(missing_ok=True)


def lucid_server(model: str | None, extra_args: Sequence[str] = (), timeout: float = 600.0,
                 env: dict[str, str] | None = None) -> ServerProcess:
    """`lucid serve` of `model` (None: the default model) on a free port, as a ServerProcess (not yet started)."""
    command = [sys.executable, "-m", "lucid.server.cli_serve", "--port", "{port}", "--log-level", "warning"]
    if model:
        command += ["--model", str(model)]
    return ServerProcess([*command, *extra_args], timeout=timeout, env=env)
