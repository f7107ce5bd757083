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


def process_tree(pid: int) -> list[int]:
    """The process, its children, theirs, and so on (Linux /proc; only `pid` where it cannot be read)."""
    found = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += process_tree(int(child))
    except OSError:
        pass
    return found


def tree_memory_bytes(pid: int, key: str = "VmRSS") -> int:
    """A /proc status memory figure (VmRSS now, VmHWM the peak) summed over the process and its descendants:
    `lucid serve` is two processes (the API front and its engine). A sum of peaks is at least the peak of the sum:
    it never flatters a server of several processes. 0 where nothing can be read."""
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


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
        """The server's peak resident memory so far, its child processes included (Linux: VmHWM), or None where it
        cannot be read."""
        if self.proc is None:
            return None
        return tree_memory_bytes(self.proc.pid, "VmHWM") or None

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
