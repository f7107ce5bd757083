"""lucid: a readable, fast inference engine and OpenAI-compatible server for Qwen2-family models."""

from lucid.sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str):  # import the engine (and torch) only when LLM is asked for
    if name == "LLM":
        from lucid.llm import LLM

        return LLM
    raise AttributeError(name)
