"""benchmarks/llama_server.py: where the binary lives, and the launcher's failure paths (no build here)."""

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def llama_server(benchmark_script):
    return benchmark_script("llama_server")


def test_binary_path_is_under_the_lucid_cache(llama_server, monkeypatch, tmp_path):
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    assert llama_server.binary_path() == tmp_path / "llama-server" / "bin" / "llama-server"
    monkeypatch.delenv("LUCID_CACHE_DIR")
    assert llama_server.binary_path() == Path.home() / ".cache" / "lucid" / "llama-server" / "bin" / "llama-server"


def test_launch_of_a_binary_that_exits_raises(llama_server):
    with pytest.raises(RuntimeError, match="exited with 1"):
        with llama_server.launched(Path("/bin/false"), "model.gguf", 8799, []):
            pass


def test_launch_that_never_gets_healthy_times_out_and_stops_it(llama_server, tmp_path):
    silent = tmp_path / "silent-server"
    silent.write_text("#!/bin/sh\nexec sleep 30\n")
    silent.chmod(0o755)
    with pytest.raises(TimeoutError):
        with llama_server.launched(silent, "model.gguf", 8798, [], timeout=0.5):
            pass
