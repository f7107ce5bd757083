"""Shared fixtures: one tiny random model per session, and one loaded real model per dtype per session."""

from __future__ import annotations

import os
import sys

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Qwen2 saved as a HF folder and as a GGUF (lucid.testing)."""
    from lucid.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def real_gguf_path():
    """The default model's GGUF, assembled from its wheels into the cache (make setup installs them)."""
    from lucid.loader import default_model_path

    return default_model_path(progress=False)


@pytest.fixture(scope="session")
def benchmark_script():
    """load(name): benchmarks/<name>.py as a module (the scripts are not a package), loaded once."""
    import importlib.util
    from pathlib import Path

    def load(name: str):  # noqa: ANN202
        key = f"{name}_script"
        if key not in sys.modules:
            path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(key, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            spec.loader.exec_module(module)
        return sys.modules[key]

    return load


_llms: dict[str, object] = {}


def shared_llm(dtype: str, quantization: str = "none"):
    """One LLM per dtype and weight format for the whole session: loading the real model is the slow part."""
    key = f"{dtype}:{quantization}"
    if key not in _llms:
        from lucid import LLM

        _llms[key] = LLM(None, dtype=dtype, quantization=quantization)
    return _llms[key]


@pytest.fixture(scope="session")
def real_llm():
    return shared_llm("bfloat16")


@pytest.fixture(scope="session")
def real_llm_fp32():
    return shared_llm("float32")


# Once in a few runs the interpreter crashed (SIGSEGV) while tearing down after the last test had passed and the
# summary was printed: a native library's threads (llguidance's Rust thread pool, torch's) dying under a finalizing
# interpreter. Leave with pytest's own exit status once everything is reported, rather than run that teardown.
_exit_status: list[int] = []


def pytest_sessionfinish(session, exitstatus):  # noqa: ANN001, ANN201 - pytest hook
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):  # noqa: ANN001, ANN201 - pytest hook
    if _exit_status and not hasattr(config, "workerinput"):
        # os._exit skips atexit: stop the shared `lucid serve` processes the server tests started first.
        for name in ("test_server_support", "test_reliability_support"):
            support = sys.modules.get(name)
            if support is not None:
                support.stop_shared_servers()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[0])
