"""Shared fixtures: one tiny random model per session, and one loaded real model per dtype per session."""

from __future__ import annotations

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
