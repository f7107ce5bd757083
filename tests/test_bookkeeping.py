"""Block manager, scheduler and sequence: pure-Python bookkeeping, no model."""

import sys

from lucid.config import EngineConfig
from lucid.engine.block_manager import BlockManager
from lucid.engine.scheduler import Scheduler
from lucid.engine.sequence import Sequence, SequenceStatus
from lucid.sampling_params import SamplingParams

P = SamplingParams(max_tokens=8)


def seq(tokens, rid="r") -> Sequence:
    return Sequence(rid, 0, list(tokens), P)


def test_bookkeeping_does_not_import_torch():
    for name in ("lucid.engine.block_manager", "lucid.engine.scheduler", "lucid.engine.sequence"):
        module = sys.modules[name]
        assert "torch" not in vars(module), name


def test_allocate_and_release_blocks():
    bm = BlockManager(num_blocks=4, block_size=4)
    s = seq(range(10))
    assert bm.allocate(s, 10) and len(s.block_table) == 3 and bm.num_free_blocks == 1
    assert not bm.allocate(s, 20)                  # needs 2 more, only 1 free: nothing changes
    assert len(s.block_table) == 3
    bm.release(s)
    assert bm.num_free_blocks == 4 and s.block_table == []


def test_prefix_cache_matches_whole_blocks_only_after_compute():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = seq(range(10))
    bm.allocate(a, 10)
    b = seq(range(10))
    assert bm.match_prefix(b) == []                 # not computed yet: nothing to share
    a.num_computed_tokens = 10
    bm.register_computed(a)
    assert bm.match_prefix(b) == a.block_table[:2]  # two full blocks; the partial one is never shared
    assert bm.admit(b) == 8
    assert bm.blocks[a.block_table[0]].ref_count == 2
    bm.release(a)
    assert bm.blocks[b.block_table[0]].ref_count == 1
    c = seq([0, 1, 2, 3, 9, 9, 9, 9, 9])             # shares only the first block
    assert len(bm.match_prefix(c)) == 1


def test_admission_counts_a_cached_prefix_once():
    """A sequence whose whole prompt fits the pool is admissible when its prefix is cached, even with those cached
    blocks free (they are revived, not allocated again): 17 tokens = 5 blocks of 4, 4 of them cached."""
    bm = BlockManager(num_blocks=5, block_size=4)
    a = seq(range(17))
    bm.allocate(a, 17)
    a.num_computed_tokens = 17
    bm.register_computed(a)
    bm.release(a)                                   # all five blocks free, four still cached
    b = seq(range(17))
    assert len(bm.match_prefix(b)) == 4
    assert bm.can_admit(b, 17)                      # 4 revived + 1 new = 5 <= 5 free
    assert not bm.can_admit(seq(range(100, 121)), 21)   # 6 blocks: more than the pool


def test_last_token_is_never_served_from_cache():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = seq(range(8))
    bm.allocate(a, 8)
    a.num_computed_tokens = 8
    bm.register_computed(a)
    assert len(bm.match_prefix(seq(range(8)))) == 1  # 8 tokens: only the first block, the last token is recomputed


def test_freed_cached_block_is_revived_then_evicted_when_reused():
    bm = BlockManager(num_blocks=2, block_size=4)
    a = seq(range(5))
    bm.allocate(a, 5)
    a.num_computed_tokens = 5
    bm.register_computed(a)
    bm.release(a)
    assert bm.num_free_blocks == 2 and len(bm.match_prefix(seq(range(6)))) == 1
    big = seq(range(100, 108))
    assert bm.allocate(big, 8)                       # takes both blocks, the cached one is overwritten
    assert bm.match_prefix(seq(range(6))) == []


def test_scheduler_chunks_long_prompts_under_budget():
    config = EngineConfig(max_num_batched_tokens=8, max_num_seqs=4, block_size=4)
    sched = Scheduler(config, BlockManager(64, 4))
    long, short = seq(range(20), "long"), seq(range(3), "short")
    sched.add(long)
    sched.add(short)
    out = sched.schedule()
    assert [(s.seq.request_id, s.num_tokens) for s in out.prefill] == [("long", 8)]
    long.num_computed_tokens += 8
    out = sched.schedule()                            # the long prompt continues, the short one joins
    assert [(s.seq.request_id, s.num_tokens) for s in out.prefill] == [("long", 8)]
    long.num_computed_tokens += 8
    out = sched.schedule()
    assert [(s.seq.request_id, s.num_tokens) for s in out.prefill] == [("long", 4), ("short", 3)]
    assert out.prefill[0].samples and out.prefill[1].samples


def test_scheduler_preempts_newest_when_pool_is_full():
    config = EngineConfig(max_num_batched_tokens=64, max_num_seqs=4, block_size=4)
    sched = Scheduler(config, BlockManager(4, 4))
    a, b = seq(range(8), "a"), seq(range(50, 57), "b")  # no shared prefix
    sched.add(a)
    sched.add(b)
    out = sched.schedule()
    assert len(out.prefill) == 2
    for item in out.prefill:
        item.seq.num_computed_tokens += item.num_tokens
    a.append_token(1)                                 # a needs a third block; none is free
    b.append_token(1)
    out = sched.schedule()
    assert out.preempted == [b] and b.status is SequenceStatus.WAITING and b.block_table == []
    assert [s.seq for s in out.decode] == [a]
    assert sched.waiting[0] is b


def test_max_num_seqs_caps_running():
    sched = Scheduler(EngineConfig(max_num_seqs=2, block_size=4), BlockManager(64, 4))
    for i in range(3):
        sched.add(seq([1, 2], f"r{i}"))
    out = sched.schedule()
    assert len(out.prefill) == 2 and len(sched.waiting) == 1


def test_prefill_is_capped_while_others_decode():
    config = EngineConfig(max_num_batched_tokens=64, max_num_seqs=4, block_size=4, max_prefill_tokens_while_decoding=8)
    sched = Scheduler(config, BlockManager(64, 4))
    short = seq([1, 2], "short")
    sched.add(short)
    first = sched.schedule()
    short.num_computed_tokens += first.prefill[0].num_tokens
    short.append_token(3)                              # now decoding
    long = seq(range(40), "long")
    sched.add(long)
    out = sched.schedule()
    assert [s.seq.request_id for s in out.decode] == ["short"]
    assert [(s.seq.request_id, s.num_tokens) for s in out.prefill] == [("long", 8)]


def test_sibling_completions_wait_for_the_shared_prompt_then_reuse_its_blocks():
    """n > 1: the prompt is computed once; the other completions join a step later from the prefix cache."""
    config = EngineConfig(max_num_batched_tokens=64, max_num_seqs=4, block_size=4)
    blocks = BlockManager(64, 4)
    sched = Scheduler(config, blocks)
    params = SamplingParams(n=3)
    first, *others = [Sequence("r", i, list(range(10)), params) for i in range(3)]
    for s in (first, *others):
        sched.add(s)
    out = sched.schedule()
    assert [s.seq for s in out.prefill] == [first] and len(sched.waiting) == 2
    first.num_computed_tokens += out.prefill[0].num_tokens
    blocks.register_computed(first)
    first.append_token(7)
    out = sched.schedule()
    assert [s.seq for s in out.decode] == [first]
    assert [(s.seq, s.num_tokens) for s in out.prefill] == [(others[0], 2), (others[1], 2)]
    assert [s.num_cached_tokens for s in others] == [8, 8]


def test_requests_arriving_together_compute_their_shared_prefix_once():
    """Two conversations with one system prompt, sent at once: the second waits while the first computes the shared
    blocks, then takes them from the prefix cache (it would otherwise compute them again in the same step). A
    request with nothing in common is not held back by it."""
    config = EngineConfig(max_num_batched_tokens=64, max_num_seqs=4, block_size=4)
    blocks = BlockManager(64, 4)
    sched = Scheduler(config, blocks)
    system = list(range(100, 112))                                 # 3 shared blocks
    first, second = seq(system + [1, 2, 3, 4, 5], "a"), seq(system + [6, 7, 8, 9, 10], "b")
    sched.add(first)
    sched.add(second)
    out = sched.schedule()
    assert [s.seq for s in out.prefill] == [first] and list(sched.waiting) == [second]
    first.num_computed_tokens += out.prefill[0].num_tokens
    blocks.register_computed(first)
    first.append_token(7)
    out = sched.schedule()
    assert [(s.seq, s.num_tokens) for s in out.prefill] == [(second, 5)]
    assert second.num_cached_tokens == 12

    sched = Scheduler(config, BlockManager(64, 4))
    third, unrelated = seq(system + [1], "c"), seq(range(200, 217), "d")
    sched.add(third)
    sched.add(unrelated)
    assert [s.seq for s in sched.schedule().prefill] == [third, unrelated]
