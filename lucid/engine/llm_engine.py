"""The step loop: schedule → run → postprocess. Synchronous; the async engine drives it from a thread."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from lucid.config import EngineConfig, ModelConfig
from lucid.engine.block_manager import BlockManager
from lucid.engine.kv_reuse import KVReuse
from lucid.engine.model_runner import ModelRunner, SampledToken
from lucid.engine.outputs import EngineStats, RequestOutput, TokenLogprob, TopLogprob
from lucid.engine.recorder import StepRecorder
from lucid.engine.request_state import CompletionState, RequestState
from lucid.engine.scheduler import Scheduler, SchedulerOutput
from lucid.engine.sequence import Sequence
from lucid.engine.speculative import Speculator
from lucid.errors import ContextLengthError, SamplingParamsError
from lucid.malloc_tuning import keep_large_blocks
from lucid.sampling_params import SamplingParams
from lucid.structured.backend import GrammarCompiler
from lucid.structured.decoder import StructuredDecoder
from lucid.threads import configure_threads

log = logging.getLogger("lucid.engine")


class LLMEngine:
    def __init__(self, model: torch.nn.Module, tokenizer: Any, model_config: ModelConfig,
                 engine_config: EngineConfig, generation_config: dict | None = None, name: str = "model",
                 device: str | torch.device = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_config = model_config
        self.generation_config = generation_config or {}
        self.model_name = name
        self.device = torch.device(device)
        dtype = next(model.parameters()).dtype
        max_len = min(engine_config.max_model_len, model_config.max_position_embeddings)
        self.engine_config = replace(engine_config, max_model_len=max_len)
        self.runner = ModelRunner(model, model_config, self.engine_config, self.device, dtype)
        self.blocks = BlockManager(self.runner.num_blocks, self.engine_config.block_size,
                                   self.engine_config.enable_prefix_caching)
        spec = self.engine_config.speculative
        self.speculator = Speculator(spec) if spec is not None else None
        self.scheduler = Scheduler(self.engine_config, self.blocks, self.speculator,
                                   KVReuse(self.blocks, self.runner.copy_kv))
        self.requests: dict[str, RequestState] = {}
        self.eos_ids = sorted(set(tokenizer.eos_token_ids) | set(model_config.eos_token_ids)
                              | set(_as_list(self.generation_config.get("eos_token_id"))))
        self.num_steps = 0
        self.recorder = StepRecorder()   # records steps only while the engine view watches
        self.source_path: Path | None = None  # the checkpoint it was loaded from (set by from_pretrained)
        self.grammars = GrammarCompiler(tokenizer, model_config.vocab_size)   # constrained decoding (lazy)
        self.runner.structured = StructuredDecoder(self.grammars, self.eos_ids)

    @classmethod
    def from_pretrained(cls, model: str | None = None, dtype: str = "bfloat16", device: str = "cpu",
                        engine_config: EngineConfig | None = None, quantization: str = "none",
                        prepare_tokenizer: bool = True) -> LLMEngine:
        """Load `model` and build an engine on it. `prepare_tokenizer` False leaves a GGUF's byte-level BPE unbuilt
        until something encodes (structured output): for an engine process whose API front tokenizes."""
        from lucid.loader.load import load_quantized

        # "none" keeps HF's separate modules for learners and references; the rest is the serving path.
        engine_config = engine_config or EngineConfig()
        keep_large_blocks()                            # a step's big tensors reuse freed memory (lucid.malloc_tuning)
        configure_threads(engine_config.num_threads)   # before loading: packing the weights is parallel too
        loaded = load_quantized(model, quantization, dtype=dtype, device=device, prepare_tokenizer=prepare_tokenizer)
        engine = cls(loaded.model, loaded.tokenizer, loaded.config, engine_config,
                     loaded.generation_config, loaded.name, device)
        engine.source_path = loaded.path
        # The tokenizer's and loader's objects live as long as the engine: move them out of the garbage
        # collector's sight, or its full collections keep re-scanning them (~3% of a busy engine's time).
        gc.collect()
        gc.freeze()
        return engine

    # ---- requests --------------------------------------------------------------------------------
    def prepare_params(self, prompt_token_ids: list[int], params: SamplingParams) -> SamplingParams:
        """Validate a request against this model and fill defaults. Raises before anything is queued."""
        vocab = self.model_config.vocab_size
        params.validate(vocab_size=vocab)
        if not prompt_token_ids:
            raise SamplingParamsError("the prompt is empty: at least one token is needed", param="prompt")
        bad = [t for t in prompt_token_ids if not 0 <= t < vocab]
        if bad:
            raise SamplingParamsError(f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab})",
                                      param="prompt")
        if params.structured is not None:
            self.grammars.compile(params.structured)  # a bad schema or grammar fails here, as a 400 (cached)
        limit = min(self.engine_config.max_model_len, self.blocks.num_blocks * self.blocks.block_size)
        max_tokens = params.max_tokens if params.max_tokens is not None else limit - len(prompt_token_ids)
        if len(prompt_token_ids) + max(max_tokens, 1) > limit:
            raise ContextLengthError(
                f"this model's maximum context length is {limit} tokens, but {len(prompt_token_ids)} prompt tokens "
                f"+ {max_tokens} max_tokens were requested; shorten the prompt or lower max_tokens")
        return replace(params.with_defaults(self.generation_config), max_tokens=max_tokens)

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                    prepared: bool = False) -> None:
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        if not prepared:
            params = self.prepare_params(prompt_token_ids, params)
        now = time.monotonic()
        completions = []
        for index in range(params.n):
            seq = Sequence(request_id, index, prompt_token_ids, params, arrival=now)
            detok = self.tokenizer.detokenizer(prompt_token_ids, skip_special_tokens=params.skip_special_tokens)
            completions.append(CompletionState(seq, detok))
            self.scheduler.add(seq)
        self.requests[request_id] = RequestState(request_id, list(prompt_token_ids), completions)

    def abort(self, request_id: str) -> RequestOutput | None:
        state = self.requests.pop(request_id, None)
        if state is None:
            return None
        for c in state.completions:
            if not c.seq.is_finished:
                c.seq.finish("abort")
            self._release(c.seq)
        return state.output()

    def abort_completion(self, request_id: str, index: int) -> RequestOutput | None:
        """Stop one completion of a request (n > 1) whose text the caller has cut (an editor's n_indent): its row
        leaves the batch, the others go on. The request's output, or None if it is gone."""
        state = self.requests.get(request_id)
        if state is None or not 0 <= index < len(state.completions):
            return None
        completion = state.completions[index]
        if not completion.seq.is_finished:
            completion.seq.finish("abort")
            completion.finish_text()
            self._release(completion.seq)
        if state.finished:
            del self.requests[request_id]
        return state.output()

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
            num_used_blocks=self.blocks.num_used_blocks, num_total_blocks=self.blocks.num_blocks,
            num_preemptions=self.scheduler.num_preemptions, num_steps=self.num_steps,
            num_draft_tokens=self.speculator.num_drafted if self.speculator else 0,
            num_accepted_tokens=self.speculator.num_accepted if self.speculator else 0,
            num_reused_tokens=self.scheduler.kv_reuse.num_reused_tokens if self.scheduler.kv_reuse else 0,
        )

    # ---- the step --------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        watched = self.recorder.watching
        started = time.perf_counter() if watched else 0.0
        sched = self.scheduler.schedule()
        if sched.is_empty:
            return []
        try:
            sampled = self.runner.run(sched, self.eos_ids)
        except Exception as exc:  # a failed forward fails this batch's requests; the engine goes on
            log.exception("forward failed; failing the %d sequences of this step", len(sched.all))
            return self._fail_batch(sched, f"internal error in the model forward: {exc}")
        outputs = self._postprocess(sched, sampled)
        if watched:
            self.recorder.record(self.num_steps, time.time(), time.perf_counter() - started, sched, self.scheduler,
                                 self.blocks)
        return outputs

    def _postprocess(self, sched: SchedulerOutput, sampled: dict[int, SampledToken]) -> list[RequestOutput]:
        self.num_steps += 1
        touched: dict[str, RequestState] = {}
        for item in sched.all:
            seq = item.seq
            seq.advance(item.num_committed)
            state = self.requests.get(seq.request_id)
            if state is None:
                continue
            self.blocks.register_computed(seq)  # before any release, so a finished answer stays reusable
            result = sampled.get(seq.seq_id)
            if result is not None:
                self._accept(state, seq, result)
                if item.draft_token_ids:
                    self._accept_drafted(state, seq, item.draft_token_ids, result.extra or [])
                touched[seq.request_id] = state
        outputs = []
        for request_id, state in touched.items():
            outputs.append(state.output())
            if state.finished:
                del self.requests[request_id]
        return outputs

    def _accept(self, state: RequestState, seq: Sequence, result: SampledToken) -> None:
        completion = state.completions[seq.index]
        if result.error:
            seq.finish("error", error=result.error)
            self._release(seq)
            return
        token = result.token_id
        seq.append_token(token)
        if result.logprob is not None:
            completion.all_logprobs.append(self._token_logprob(token, result))
        params = seq.params
        can_stop = seq.num_output_tokens >= params.min_tokens
        if can_stop and token in params.stop_token_ids:
            seq.finish("stop", stop_reason=token)
        elif can_stop and not params.ignore_eos and token in self.eos_ids:
            seq.finish("stop")
        else:
            stop_string = completion.add_token(token)
            if stop_string is not None:
                seq.finish("stop", stop_reason=stop_string)
            elif seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.engine_config.max_model_len:
                seq.finish("length")
        if seq.is_finished:
            completion.finish_text()
            self._release(seq)

    def _accept_drafted(self, state: RequestState, seq: Sequence, drafts: list[int],
                        extra: list[SampledToken]) -> None:
        """The rest of a verify row's tokens: each one means the draft before it was kept, so its K/V (written by
        this step) counts as computed. Stops at the first that ends the sequence; the slots of rejected drafts are
        handed back."""
        for token in extra:
            if seq.is_finished:
                break
            seq.num_computed_tokens += 1
            self.blocks.register_computed(seq)
            self._accept(state, seq, token)
        self.speculator.record(seq, len(drafts), len(extra))
        if not seq.is_finished:
            self.blocks.trim(seq, seq.num_tokens)

    def _token_logprob(self, token: int, result: SampledToken) -> TokenLogprob:
        text = self.tokenizer.token_text
        top = [TopLogprob(t.token_id, text(t.token_id), t.logprob) for t in (result.top or [])]
        return TokenLogprob(token, text(token), float(result.logprob), top, result.drafted)

    def _release(self, seq: Sequence) -> None:
        self.scheduler.finish(seq)
        self.runner.forget(seq)

    def _fail_batch(self, sched: SchedulerOutput, message: str) -> list[RequestOutput]:
        failed: dict[str, RequestState] = {}
        for item in sched.all:
            state = self.requests.get(item.seq.request_id)
            if state is not None:
                failed[state.request_id] = state
        outputs = []
        for request_id, state in failed.items():
            for c in state.completions:
                if not c.seq.is_finished:
                    c.seq.finish("error", error=message)
                self._release(c.seq)
            outputs.append(state.output())
            del self.requests[request_id]
        return outputs


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)
