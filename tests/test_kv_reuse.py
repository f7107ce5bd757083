"""Shifted K/V reuse (engine/kv_reuse.py, llama.cpp's --cache-reuse): finding runs, the RoPE shift, the block
bookkeeping, and the engine copying a finished request's K/V into a new one at other positions."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import run_all, tiny_engine

from lucid.engine.block_manager import BlockManager
from lucid.engine.kv_reuse import RECOMPUTE_AFTER_EDIT, KVReuse, Run, find_runs
from lucid.engine.sequence import Sequence, SequenceStatus
from lucid.layers.rotary import RotaryEmbedding
from lucid.sampling_params import SamplingParams

pytestmark = pytest.mark.timeout(120)


# ---- finding runs ----------------------------------------------------------------------------------------------
def test_find_runs_finds_the_moved_suffix():
    old = list(range(100, 140)) + [7, 7] + list(range(200, 260))      # prefix, typed line, suffix
    new = list(range(100, 140)) + [7, 7, 8, 8, 8] + list(range(200, 260))
    assert find_runs(new, 40, len(new) - 1, old, 16) == [Run(42, 45, 59)]   # the last token is left to compute


def test_find_runs_keeps_order_and_minimum_length():
    a, b = list(range(0, 30)), list(range(50, 80))
    old = a + b
    assert find_runs(b + a, 0, 60, old, 16) == [Run(30, 0, 30)]      # a comes after b: not reusable in order
    assert find_runs(a + [999] + b, 0, 61, old, 16) == [Run(0, 0, 30), Run(30, 31, 30)]
    assert find_runs(a + [999] + b, 0, 61, old, 31) == []            # both runs shorter than 31
    assert find_runs([1, 2, 3], 0, 2, [1, 2, 3], 16) == []


# ---- the rotation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scaling", [None, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}])
def test_shifting_a_rotated_key_equals_rotating_it_at_the_new_position(scaling):
    rope = RotaryEmbedding(32, 10_000.0, 4096, scaling)
    k = torch.randn(5, 2, 32)                                              # (L, kv_heads, head_dim)
    q = torch.zeros(5, 2, 32)
    positions = torch.tensor([0, 3, 17, 200, 1000])
    _, at_p = rope(positions, q, k)
    rope._last = None
    _, at_p_plus = rope(positions + 37, q, k)
    torch.testing.assert_close(rope.shift(at_p, 37), at_p_plus, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rope.shift(at_p_plus, -37), at_p, atol=1e-4, rtol=1e-4)


def test_runs_after_an_edit_lose_their_head_but_exact_ones_do_not():
    old = list(range(100, 150))
    after_edit = KVReuse._after_edits([Run(10, 12, 30)], [0] * 12 + old[10:40], old)
    assert after_edit == [Run(26, 28, 14)]
    same_before = KVReuse._after_edits([Run(10, 10, 30)], old[:40], old)   # same tokens before, same positions
    assert same_before == [Run(10, 10, 30)]
    edited_before = KVReuse._after_edits([Run(10, 10, 30)], [1] + old[1:40], old)
    assert edited_before == [Run(26, 26, 14)]
    assert KVReuse._after_edits([Run(10, 12, 16)], [0] * 12 + old[10:26], old) == []


# ---- bookkeeping -----------------------------------------------------------------------------------------------
def _finished(blocks: BlockManager, tokens: list[int], reuse: int = 16) -> Sequence:
    seq = Sequence("old", 0, tokens, SamplingParams(max_tokens=4, cache_reuse=reuse))
    blocks.admit(seq)
    assert blocks.allocate(seq, len(tokens))
    seq.num_computed_tokens = len(tokens)
    blocks.register_computed(seq)
    return seq


def _remembered(blocks: BlockManager, reuse: KVReuse, tokens: list[int]) -> Sequence:
    """A finished sequence of `tokens`, remembered as a source, its blocks released (free, their K/V intact)."""
    old = _finished(blocks, tokens)
    reuse.remember(old)
    blocks.release(old)
    return old


def _typed(prefix: list[int], reuse: int = 16) -> Sequence:
    """A new prompt: `prefix`, then the 40 tokens of the remembered source, then one more."""
    return Sequence("new", 0, prefix + list(range(100, 140)) + [9], SamplingParams(cache_reuse=reuse))


def test_apply_copies_the_run_and_skips_it():
    blocks = BlockManager(num_blocks=64, block_size=4)
    copies = []
    reuse = KVReuse(blocks, lambda src, dst, shift: copies.append((src, dst, shift)))
    head, line, suffix = list(range(100, 108)), [7], list(range(200, 240))
    old = _finished(blocks, head + line + suffix)
    old_table = list(old.block_table)
    reuse.remember(old)
    blocks.release(old)

    new = Sequence("new", 0, head + [7, 8, 8] + suffix + [5], SamplingParams(max_tokens=4, cache_reuse=16))
    assert blocks.admit(new) == 8                                          # two exact blocks of the head
    # The suffix moved 2 on; its first RECOMPUTE_AFTER_EDIT tokens follow the edit and are computed again.
    assert reuse.apply(new, running=[]) == 40 - RECOMPUTE_AFTER_EDIT == 24
    [(src, dst, shift)] = copies
    assert shift == 2 and len(src) == len(dst) == 24
    assert src[0] == old_table[25 // 4] * 4 + 25 % 4                      # old position 9 + 16 in the old blocks
    assert dst[0] == new.block_table[27 // 4] * 4 + 27 % 4
    assert new.reused_spans == [(27, 51)] and new.num_exact_tokens == 27 and new.num_cached_tokens == 8 + 24
    assert new.num_computed_tokens == 8 and new.num_computable_tokens == 19  # the typed line and 16, then a jump
    new.advance(19)
    assert new.num_computed_tokens == 51 and new.num_computable_tokens == 1  # only the last token is left
    new.advance(1)
    blocks.register_computed(new)
    assert new.num_hashed_blocks == 6                                      # nothing from the copy on is shared


def test_a_reallocated_source_is_not_read():
    blocks = BlockManager(num_blocks=16, block_size=4)
    reuse = KVReuse(blocks, lambda *a: pytest.fail("copied from overwritten blocks"))
    _remembered(blocks, reuse, list(range(100, 140)))
    filler = Sequence("f", 0, list(range(500, 564)), SamplingParams())
    assert blocks.allocate(filler, 64)                                     # takes every block, old ones included
    blocks.release(filler)
    new = _typed([1, 2])
    blocks.admit(new)
    assert reuse.apply(new, running=[]) == 0 and new.reused_spans == []


def test_sources_are_held_while_the_new_sequence_allocates():
    blocks = BlockManager(num_blocks=12, block_size=4)                     # old 10 blocks, 2 free
    seen = []

    def copy(src, dst, shift):
        seen.append(set(s // 4 for s in src) & set(d // 4 for d in dst))

    reuse = KVReuse(blocks, copy)
    _remembered(blocks, reuse, list(range(100, 140)))                     # all 12 blocks free, old ones cached
    new = _typed([1, 2, 3, 4])
    blocks.admit(new)
    # The new sequence needs 11 blocks but only 2 are not the source's: no reuse, nothing overwritten.
    assert reuse.apply(new, running=[]) == 0 and not seen
    assert blocks.num_free_blocks == 12 - len(new.block_table)


def test_reuse_leaves_a_block_for_each_running_sequence():
    # 22 blocks: 3 for running sequences, 6 held (the copied run's source), 13 free; the new one needs 11
    blocks = BlockManager(num_blocks=22, block_size=4)
    reuse = KVReuse(blocks, lambda *a: None)
    _remembered(blocks, reuse, list(range(100, 140)))
    runners = []
    for i in range(3):                                                     # 3 blocks held by running sequences
        runner = Sequence(f"run{i}", 0, [500 + i], SamplingParams())
        blocks.allocate(runner, 1)
        runners.append(runner)
    new = _typed([1, 2, 3, 4])
    blocks.admit(new)
    assert reuse.apply(new, running=runners) == 0                          # 11 + 3 running > 13 free
    assert new.block_table == [] and blocks.num_free_blocks == 22 - 3
    assert reuse.apply(new, running=runners[:2]) > 0                       # 11 + 2 <= 13


def test_release_forgets_the_spans():
    blocks = BlockManager(num_blocks=64, block_size=4)
    reuse = KVReuse(blocks, lambda *a: None)
    _remembered(blocks, reuse, list(range(100, 140)))
    new = _typed([1])
    blocks.admit(new)
    assert reuse.apply(new, running=[]) > 0
    new.status = SequenceStatus.RUNNING
    blocks.release(new)                                                    # preempted: it will be recomputed
    assert new.reused_spans == [] and new.num_exact_tokens is None and new.num_computed_tokens == 0


# ---- the engine ------------------------------------------------------------------------------------------------
def test_engine_reuses_a_moved_run_with_rotated_keys():
    engine = tiny_engine()
    head, suffix = [3, 4, 5, 6, 7, 8, 9, 10], list(range(20, 60))
    params = SamplingParams(temperature=0, max_tokens=3, cache_reuse=16)
    [first] = run_all(engine, [head + [11] + suffix + [99]], params)
    assert first.num_cached_tokens == 0
    old_keys = engine.runner.k_pool.clone()
    old_table = engine.scheduler.kv_reuse.finished[-1].block_table
    [second] = run_all(engine, [head + [11, 12, 13] + suffix + [99]], params)
    assert engine.scheduler.kv_reuse.num_reused_tokens == 40 - 16
    assert second.num_cached_tokens == 8 + 24 and len(second.outputs[0].token_ids) == 3
    # The copied keys are the old ones rotated 2 positions on, layer by layer; the values are the old ones.
    bs = engine.blocks.block_size
    seq_blocks = [engine.blocks.blocks[b] for b in range(engine.blocks.num_blocks)]
    assert all(b.ref_count == 0 for b in seq_blocks)                      # everything released
    src = [old_table[p // bs] * bs + p % bs for p in range(25, 49)]
    shifted = engine.model.shift_cached_keys(old_keys[:, src], 2)
    new_table = engine.scheduler.kv_reuse.finished[-1].block_table
    dst = [new_table[p // bs] * bs + p % bs for p in range(27, 51)]
    torch.testing.assert_close(engine.runner.k_pool[:, dst], shifted)


def test_engine_reuse_at_the_same_positions_is_exact():
    """With the prefix cache off, a repeated prompt is found whole at shift 0: copied K/V computed in the same
    context at the same positions, so greedy output is identical to computing it."""
    params = SamplingParams(temperature=0, max_tokens=6, cache_reuse=16)
    prompt = list(range(3, 60))
    engine = tiny_engine(enable_prefix_caching=False)
    [first] = run_all(engine, [prompt], params)
    [second] = run_all(engine, [prompt], params)
    assert engine.scheduler.kv_reuse.num_reused_tokens == len(prompt) - 1
    assert second.outputs[0].token_ids == first.outputs[0].token_ids


def test_requests_without_cache_reuse_never_copy():
    engine = tiny_engine()
    params = SamplingParams(temperature=0, max_tokens=2)
    run_all(engine, [[3, 4, 5, 6] + list(range(20, 60))], params)
    [second] = run_all(engine, [[3, 4, 5, 6, 7] + list(range(20, 60))], params)
    assert engine.scheduler.kv_reuse.num_reused_tokens == 0 and second.num_cached_tokens == 4


def test_cache_reuse_must_not_be_negative():
    with pytest.raises(ValueError, match="cache_reuse"):
        SamplingParams(cache_reuse=-1)
