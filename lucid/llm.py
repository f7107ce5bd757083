"""The Python API: `LLM(...).generate(prompts, params)` and `.chat(conversations, params)`, batched."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from lucid.config import EngineConfig
from lucid.engine.llm_engine import LLMEngine
from lucid.engine.outputs import RequestOutput
from lucid.engine.speculative import SpeculativeConfig
from lucid.sampling_params import SamplingParams

Conversation = list[dict[str, Any]]


class LLM:
    """Load a model once; run lists of prompts or conversations as one batch through the engine.

    >>> llm = LLM()                                   # the default model (Qwen2.5-Coder-0.5B-Instruct GGUF)
    >>> out = llm.chat([{"role": "user", "content": "Hi!"}], SamplingParams(temperature=0, max_tokens=32))
    >>> print(out[0].outputs[0].text)
    """

    def __init__(self, model: str | None = None, dtype: str = "bfloat16", device: str = "cpu",
                 quantization: str = "none", **engine_options: Any) -> None:
        # speculative: "ngram", "ngram:K", a dict of SpeculativeConfig fields, or a SpeculativeConfig
        spec = engine_options.get("speculative")
        if isinstance(spec, str):
            engine_options["speculative"] = SpeculativeConfig.parse(spec)
        elif isinstance(spec, dict):
            engine_options["speculative"] = SpeculativeConfig.parse(None, spec)
        self.engine = LLMEngine.from_pretrained(model, dtype=dtype, device=device, quantization=quantization,
                                                engine_config=EngineConfig(**engine_options))
        self.tokenizer = self.engine.tokenizer
        self.model: torch.nn.Module = self.engine.model
        self.config = self.engine.model_config
        self._ids = itertools.count()

    def generate(self, prompts: str | Sequence[str] | Sequence[Sequence[int]],
                 params: SamplingParams | None = None) -> list[RequestOutput]:
        """Raw prompts (no chat template): strings, or lists of token ids. One output per prompt, in order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        token_lists = [self.tokenizer.encode_prompt(p) if isinstance(p, str) else list(p) for p in prompts]
        return self._run(token_lists, params or SamplingParams())

    def chat(self, conversations: Conversation | Sequence[Conversation], params: SamplingParams | None = None,
             add_generation_prompt: bool = True) -> list[RequestOutput]:
        """Apply the model's chat template to each conversation, then generate them as one batch."""
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]  # type: ignore[list-item]
        token_lists = [self.encode_chat(c, add_generation_prompt) for c in conversations]  # type: ignore[arg-type]
        return self._run(token_lists, params or SamplingParams())

    def encode_chat(self, messages: Conversation, add_generation_prompt: bool = True) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        return self.tokenizer.encode(text)

    def stream(self, prompt_token_ids: list[int], params: SamplingParams) -> Iterator[RequestOutput]:
        """One request, yielding an output after every step (the CLI prints the deltas as they come)."""
        request_id = f"stream-{next(self._ids)}"
        self.engine.add_request(request_id, prompt_token_ids, params)
        try:
            while self.engine.has_unfinished():
                yield from self.engine.step()
        finally:
            self.engine.abort(request_id)

    def _run(self, token_lists: list[list[int]], params: SamplingParams) -> list[RequestOutput]:
        ids = [f"batch-{next(self._ids)}" for _ in token_lists]
        for request_id, tokens in zip(ids, token_lists):
            self.engine.add_request(request_id, tokens, params)
        finished: dict[str, RequestOutput] = {}
        while len(finished) < len(ids):
            for out in self.engine.step():
                if out.finished:
                    finished[out.request_id] = out
        return [finished[i] for i in ids]
