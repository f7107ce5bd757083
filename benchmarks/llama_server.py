"""llama.cpp's own `llama-server`, built from the llama.cpp sources inside the llama-cpp-python sdist on PyPI.

The benchmarks use it as the serving peer: it batches requests across parallel slots (`-np`), unlike
llama-cpp-python's Python server. The binary lands at a stable path other benchmarks rely on:

    $LUCID_CACHE_DIR/llama-server/bin/llama-server      (LUCID_CACHE_DIR defaults to ~/.cache/lucid)

    python benchmarks/llama_server.py            # build if missing (10-15 min on 2 cores), print the path
    python benchmarks/llama_server.py --rebuild  # build again

From code: `binary = ensure_built()`, then `with launched(binary, gguf, port, ["-np", "16"]) as server: ...`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # pins the llama.cpp sources (its vendor/llama.cpp tree)
CMAKE_FLAGS = ["-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DBUILD_SHARED_LIBS=OFF"]


def cache_root() -> Path:
    return Path(os.environ.get("LUCID_CACHE_DIR", Path.home() / ".cache" / "lucid")) / "llama-server"


def binary_path() -> Path:
    return cache_root() / "bin" / "llama-server"


def _download_sdist(into: Path) -> Path:
    """The sdist through pip (the registry's ordinary client), sources only, no dependencies."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q",
                    "-d", str(into), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"], check=True)
    return next(into.glob("llama_cpp_python-*.tar.gz"))


def build(log: Path | None = None) -> Path:
    """Download, configure and build `llama-server`; copy it to binary_path(). Returns that path."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    log = log or root / "build.log"
    with tempfile.TemporaryDirectory(dir=root) as scratch, open(log, "w") as out:
        sdist = _download_sdist(Path(scratch))
        with tarfile.open(sdist) as archive:
            archive.extractall(scratch, filter="data")
        source = next(Path(scratch).glob("llama_cpp_python-*/vendor/llama.cpp"))
        build_dir = Path(scratch) / "build"
        run = dict(stdout=out, stderr=subprocess.STDOUT, check=True)
        subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_FLAGS], **run)
        jobs = str(max(1, len(os.sched_getaffinity(0))))
        subprocess.run(["nice", "-n", "10", "cmake", "--build", str(build_dir), "--target", "llama-server",
                        "-j", jobs], **run)
        binary_path().parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build_dir / "bin" / "llama-server", binary_path())
    return binary_path()


def ensure_built() -> Path:
    return binary_path() if binary_path().exists() else build()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def launched(binary: Path, gguf: str, port: int, flags: list[str], timeout: float = 120.0,
             log: Path | None = None) -> Iterator[subprocess.Popen]:
    """Run `llama-server -m gguf --port port *flags` until the block ends; yields once /health answers 200."""
    command = [str(binary), "-m", gguf, "--host", "127.0.0.1", "--port", str(port), *flags]
    sink = open(log, "w") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(port):
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {process.returncode}: {' '.join(command)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"llama-server not healthy after {timeout:.0f} s")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if sink is not subprocess.DEVNULL:
            sink.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rebuild", action="store_true", help="build even if the binary exists")
    args = parser.parse_args()
    path = build() if args.rebuild else ensure_built()
    print(path)


if __name__ == "__main__":
    main()
