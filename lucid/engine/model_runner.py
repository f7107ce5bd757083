"""The only part of the engine that touches tensors each step: build the flat batch, run the model, sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lucid.config import EngineConfig, ModelConfig
from lucid.engine.block_manager import pool_slots
from lucid.engine.kv_pool import kv_pool_bytes, zeroed_pool
from lucid.engine.outputs import TopLogprob
from lucid.engine.scheduler import ScheduledSeq, SchedulerOutput
from lucid.engine.sequence import Sequence
from lucid.engine.spec_verify import draft_views, verify_drafts
from lucid.kernels.fused import build_fused_decoder
from lucid.layers.attention_metadata import AttentionMetadata, PrefillChunk
from lucid.layers.sampler import SamplingTensors, sample
from lucid.models.base import CausalLM

if TYPE_CHECKING:
    from lucid.structured.decoder import StructuredDecoder

# Prompt chunks take the fused step while the keys their rows read add up to at most this many per step: below
# it the fused step's chunk attention beats the eager path (PyTorch's flash attention plus per-op overhead), above
# it they are about even. Measured on a 2-core Zen 4, prompts prefilled fused vs eager: 512 tokens 589 vs 460 tok/s,
# 1,024: 523 vs 418, 2,048: 438 vs 397, 4,000 (its later chunks ~1.9M keys each): 305 vs 298.
FUSED_PREFILL_ATTENTION_BUDGET = 1 << 20


@dataclass
class SampledToken:
    token_id: int
    logprob: float | None = None             # raw log-probability of the token (when asked)
    top: list[TopLogprob] | None = None      # raw top alternatives (token text filled in by the engine)
    error: str | None = None                 # set when this row's logits were not finite
    extra: list[SampledToken] | None = None  # further tokens of the same step (kept speculative drafts' successors)
    drafted: bool = False                    # an n-gram draft the verify row kept (speculative decoding)


def kv_bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
    """K and V for every layer: 2 x layers x kv_heads x head_dim x element size."""
    element = torch.tensor([], dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * element


class ModelRunner:
    structured: StructuredDecoder | None = None   # set by the engine: masks the logits of constrained sequences

    def __init__(self, model: CausalLM, config: ModelConfig, engine_config: EngineConfig,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.config = config
        self.block_size = engine_config.block_size
        self.device = device
        per_token = kv_bytes_per_token(config, dtype)
        pool_bytes = kv_pool_bytes(engine_config.kv_cache_memory, engine_config.max_num_seqs,
                                   min(engine_config.max_model_len, config.max_position_embeddings), per_token,
                                   self.block_size)
        self.num_blocks = max(1, pool_bytes // (per_token * self.block_size))
        slots = self.num_blocks * self.block_size
        # One preallocated pool: (layers, slots, kv_heads, head_dim) for K and for V.
        shape = (config.num_hidden_layers, slots, config.num_key_value_heads, config.head_dim)
        self.k_pool = zeroed_pool(shape, dtype, device)
        self.v_pool = zeroed_pool(shape, dtype, device)
        for i, layer in enumerate(model.model.layers):
            layer.self_attn.k_cache = self.k_pool[i]
            layer.self_attn.v_cache = self.v_pool[i]
        self.generators: dict[int, torch.Generator] = {}   # seq_id -> its own generator (seeded requests)
        self.fused_decoder = None if engine_config.enforce_eager else build_fused_decoder(model, device)

    # ---- batch building --------------------------------------------------------------------------
    def _slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        return pool_slots(block_table, self.block_size, start, end)

    def prepare(self, sched: SchedulerOutput) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """Flat token ids (N,), positions (N,) and the attention metadata: decode tokens first, then chunks."""
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        for item in sched.decode:
            seq, p = item.seq, item.seq.num_computed_tokens
            ids.append(seq.token_ids[p])
            positions.append(p)
            slots.extend(self._slots(seq.block_table, p, p + 1))
        decode_slots = decode_mask = None
        if sched.decode:
            decode_slots, decode_mask = self._decode_context(sched.decode)
        prefills = []
        for item in sched.verify + sched.prefill:   # the eager path computes a verify row as a chunk
            seq, start, n = item.seq, item.seq.num_computed_tokens, item.num_tokens
            chunk_start = len(ids)
            ids.extend(item.token_ids)
            positions.extend(range(start, start + n))
            slots.extend(self._slots(seq.block_table, start, start + n))
            context_slots = None
            if start > 0:
                context_slots = torch.tensor(self._slots(seq.block_table, 0, start + n), device=self.device)
            prefills.append(PrefillChunk(chunk_start, n, start + n, context_slots))
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, device=self.device),
            num_decode=len(sched.decode), decode_slots=decode_slots, decode_mask=decode_mask, prefills=prefills,
        )
        return torch.tensor(ids, device=self.device), torch.tensor(positions, device=self.device), meta

    def _decode_context(self, items: list[ScheduledSeq]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pool slots (D, L) of each decoding sequence's whole context, padded to the longest, and its mask."""
        lengths = [it.seq.num_computed_tokens + 1 for it in items]
        max_len = max(lengths)
        max_blocks = -(-max_len // self.block_size)
        tables = torch.tensor([it.seq.block_table[:max_blocks] + [0] * (max_blocks - len(it.seq.block_table))
                               for it in items], device=self.device)                        # (D, max_blocks)
        pos = torch.arange(max_len, device=self.device)                                     # (L,)
        decode_slots = tables[:, pos // self.block_size] * self.block_size + pos % self.block_size  # (D, L)
        if min(lengths) == max_len:
            return decode_slots, None                                                        # nothing padded
        mask = pos.unsqueeze(0) < torch.tensor(lengths, device=self.device).unsqueeze(1)    # (D, L)
        return decode_slots, mask

    @torch.inference_mode()
    def copy_kv(self, src_slots: list[int], dst_slots: list[int], shift: int) -> None:
        """Copy K/V between pool slots for every layer, keys re-rotated `shift` positions on (engine/kv_reuse.py)."""
        src = torch.tensor(src_slots, device=self.device)
        dst = torch.tensor(dst_slots, device=self.device)
        keys = self.k_pool[:, src]                                       # (layers, L, kv_heads, head_dim)
        self.k_pool[:, dst] = self.model.shift_cached_keys(keys, shift) if shift else keys
        self.v_pool[:, dst] = self.v_pool[:, src]

    def _fused_fits(self, sched: SchedulerOutput) -> bool:
        """Whether the fused C++ step should run this step: always for decode tokens; prompt chunks while their
        attention work stays under FUSED_PREFILL_ATTENTION_BUDGET (past it, the eager path is as fast)."""
        if self.fused_decoder is None:
            return False
        work = 0  # keys read by the prompt rows: sum of their context lengths
        for item in sched.prefill:
            start, n = item.seq.num_computed_tokens, item.num_tokens
            work += n * start + n * (n + 1) // 2
        return work <= FUSED_PREFILL_ATTENTION_BUDGET

    def _fused_forward(self, items: list[ScheduledSeq]) -> torch.Tensor:
        """The step through the fused C++ decoder: every token is a row that attends over its own sequence's
        block table up to its position (so a prompt chunk is causal by construction)."""
        return self.fused_decoder.forward(*self._fused_inputs(items))

    def fused_forward_tapped(self, items: list[ScheduledSeq]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_fused_forward` (bit for bit) that also hands back the last row's residual stream (layers + 1, hidden)
        and rotated queries (layers, heads * head_dim), float32: what the glass box reads (lucid/glassbox)."""
        inputs = self._fused_inputs(items)
        return self.fused_decoder.forward_tapped(*inputs, row=len(inputs[0]) - 1)

    def _fused_inputs(self, items: list[ScheduledSeq]) -> tuple:
        """FusedDecoder.forward's arguments for the step's rows."""
        bs = self.block_size
        max_blocks = max(-(-(it.seq.num_computed_tokens + it.num_tokens) // bs) for it in items)
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        tables: list[list[int]] = []     # each row's block table, padded to max_blocks
        # Generated positions (decode and verify rows, and those recomputed after a preemption) attend one by one,
        # prompt positions as chunk rows: either way bitwise the same however the step was composed.
        alone: list[bool] = []
        for item in items:
            seq, start, end = item.seq, item.seq.num_computed_tokens, item.seq.num_computed_tokens + item.num_tokens
            ids.extend(item.token_ids)
            alone.extend(p >= seq.num_prompt_tokens for p in range(start, end))
            positions.extend(range(start, end))
            slots.extend(self._slots(seq.block_table, start, end))
            tables.extend([seq.block_table[:max_blocks] + [0] * (max_blocks - len(seq.block_table))] * item.num_tokens)
        hidden = self.model.model.embed(torch.tensor(ids))                 # (N, hidden)
        return (hidden, torch.tensor(positions), torch.tensor(slots), torch.tensor(tables, dtype=torch.int32),
                torch.tensor([p + 1 for p in positions], dtype=torch.int32), bs, torch.tensor(alone, dtype=torch.bool))

    def _sampling_tensors(self, seqs: list[Sequence], eos_ids: list[int]) -> SamplingTensors:
        vocab = self.config.vocab_size
        dev = self.device
        ps = [s.params for s in seqs]

        def column(values: list, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=dev)

        need_counts = any(p.presence_penalty or p.frequency_penalty for p in ps)
        need_seen = any(p.repetition_penalty != 1.0 for p in ps)
        counts = seen = bias = None
        if need_counts:
            counts = torch.zeros(len(seqs), vocab, device=dev)
            for i, s in enumerate(seqs):
                out = s.output_token_ids
                if out:
                    counts[i].index_add_(0, torch.tensor(out, device=dev), torch.ones(len(out), device=dev))
        if need_seen:
            seen = torch.zeros(len(seqs), vocab, dtype=torch.bool, device=dev)
            for i, s in enumerate(seqs):
                seen[i, torch.tensor(s.token_ids, device=dev)] = True
        for i, (s, p) in enumerate(zip(seqs, ps)):
            banned = []
            if s.num_output_tokens < p.min_tokens:   # min_tokens: the sequence may not end yet
                banned = list(p.stop_token_ids) + ([] if p.ignore_eos else list(eos_ids))
            if p.logit_bias or banned:
                if bias is None:
                    bias = torch.zeros(len(seqs), vocab, device=dev)
                for token_id, value in p.logit_bias.items():
                    bias[i, token_id] = value
                for token_id in banned:
                    bias[i, token_id] = float("-inf")
        generators: list[torch.Generator | None] = []
        for s in seqs:
            if s.params.seed is not None and s.seq_id not in self.generators:
                g = torch.Generator(device=dev)
                g.manual_seed((s.params.seed + s.index * 1_000_003) % (1 << 64))
                self.generators[s.seq_id] = g
            generators.append(self.generators.get(s.seq_id))
        tops = [p.logprobs for p in ps if p.logprobs is not None]
        return SamplingTensors(
            temperature=column([p.temperature for p in ps]),
            top_k=column([p.top_k if p.top_k and p.top_k > 0 else 0 for p in ps], torch.long),
            top_p=column([p.top_p for p in ps]),
            min_p=column([p.min_p for p in ps]),
            repetition_penalty=column([p.repetition_penalty for p in ps]),
            presence_penalty=column([p.presence_penalty for p in ps]),
            frequency_penalty=column([p.frequency_penalty for p in ps]),
            output_counts=counts, seen_mask=seen, bias=bias, generators=generators,
            all_greedy=all(p.temperature == 0 for p in ps),
            num_top_logprobs=max(tops) if tops else -1,
        )

    # ---- the step --------------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, sched: SchedulerOutput, eos_ids: list[int]) -> dict[int, SampledToken]:
        """One batched forward for the scheduled tokens; a next token for each sequence that reached its end."""
        if self._fused_fits(sched):
            hidden = self._fused_forward(sched.all)                      # (N, hidden), one C++ call
        else:
            ids, positions, meta = self.prepare(sched)
            hidden = self.model.model(ids, positions, meta)              # (N, hidden)
        items = sched.all
        last_index, sampling = [], []
        verify_index, verifying = [], []
        offset = 0
        for item in items:
            offset += item.num_tokens
            if item.draft_token_ids:                   # every row of a verify row: k+1 distributions
                verify_index.extend(range(offset - item.num_tokens, offset))
                verifying.append(item)
            elif item.samples:
                last_index.append(offset - 1)
                sampling.append(item.seq)
        if not sampling and not verifying:
            return {}
        # Only the last position of each finishing sequence reaches the lm_head (one weight read for all rows).
        all_logits = self.model.compute_logits(
            hidden[torch.tensor(last_index + verify_index, device=self.device)])  # (B + R, V)
        logits = all_logits[:len(last_index)]
        verified = self._verify(all_logits[len(last_index):], verifying, eos_ids) if verifying else {}
        if not sampling:
            return verified
        tensors = self._sampling_tensors(sampling, eos_ids)
        finite = torch.isfinite(logits.amax(dim=-1)).tolist()  # a NaN or +inf anywhere in a row shows in its max
        if not all(finite):  # rare: zero the broken rows so they cannot poison the batch (and skip a copy if not)
            logits[~torch.tensor(finite, device=logits.device)] = 0.0
        if self.structured is not None:
            self.structured.mask_logits(sampling, logits)               # grammar-forbidden tokens -> -inf
        next_ids = sample(logits, tensors)
        results = self._gather_results(sampling, logits, next_ids, tensors.num_top_logprobs)
        for seq, ok in zip(sampling, finite):
            if not ok:
                results[seq.seq_id].error = "the model produced non-finite logits for this sequence"
        results.update(verified)
        return results

    def _verify(self, logits: torch.Tensor, items: list[ScheduledSeq], eos_ids: list[int]) -> dict[int, SampledToken]:
        """Keep or reject each verify row's drafts (engine/spec_verify.py); its emitted tokens as one SampledToken
        whose `extra` holds the rest, in order."""
        views = [v for it in items for v in draft_views(it.seq, it.draft_token_ids)]
        finite = torch.isfinite(logits.amax(dim=-1)).tolist()
        if not all(finite):
            logits[~torch.tensor(finite, device=logits.device)] = 0.0
        verified = verify_drafts(logits, [it.draft_token_ids for it in items], self._sampling_tensors(views, eos_ids))
        want_logprobs = any(it.seq.params.logprobs is not None for it in items)
        logprobs = logits.log_softmax(dim=-1) if want_logprobs else None    # raw distribution, as OpenAI reports
        out: dict[int, SampledToken] = {}
        for item, v in zip(items, verified):
            k = item.seq.params.logprobs
            tokens = []
            for j, (token, row) in enumerate(zip(v.tokens, v.rows)):
                drafted = j < v.num_accepted          # the kept drafts come first, then the one sampled token
                if k is None:
                    tokens.append(SampledToken(token, drafted=drafted))
                else:
                    top_vals, top_ids = logprobs[row].topk(max(k, 1))
                    tokens.append(SampledToken(token, float(logprobs[row, token]), [
                        TopLogprob(i, "", val) for i, val in zip(top_ids.tolist()[:k], top_vals.tolist()[:k])],
                        drafted=drafted))
            if not all(finite[row] for row in v.rows):
                tokens = [SampledToken(tokens[0].token_id, error="the model produced non-finite logits for this "
                                                                 "sequence")]
            tokens[0].extra = tokens[1:]
            out[item.seq.seq_id] = tokens[0]
        return out

    def _gather_results(self, seqs: list[Sequence], logits: torch.Tensor, next_ids: torch.Tensor,
                        num_top: int) -> dict[int, SampledToken]:
        if num_top < 0:
            return {s.seq_id: SampledToken(t) for s, t in zip(seqs, next_ids.tolist())}
        logprobs = logits.log_softmax(dim=-1)                           # raw distribution, as OpenAI reports
        chosen = logprobs.gather(1, next_ids.unsqueeze(1)).squeeze(1)
        top_vals, top_ids = logprobs.topk(max(num_top, 1), dim=-1)
        out: dict[int, SampledToken] = {}
        for s, t, lp, tv, ti in zip(seqs, next_ids.tolist(), chosen.tolist(), top_vals.tolist(), top_ids.tolist()):
            k = s.params.logprobs
            if k is None:
                out[s.seq_id] = SampledToken(t)
            else:
                out[s.seq_id] = SampledToken(t, lp, [TopLogprob(tid, "", v) for tid, v in zip(ti[:k], tv[:k])])
        return out

    def forget(self, seq: Sequence) -> None:
        self.generators.pop(seq.seq_id, None)
        if self.structured is not None:
            self.structured.forget(seq)
