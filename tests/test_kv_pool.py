"""The KV pool's size rule and its lazily committed memory."""

import pytest
import torch

from lucid.config import EngineConfig
from lucid.engine import kv_pool
from lucid.engine.kv_pool import KV_MEMORY_SHARE, kv_pool_bytes, zeroed_pool
from lucid.engine.model_runner import kv_bytes_per_token
from tests.engine_fixtures import TINY, tiny_engine

GIB = 1 << 30


def test_explicit_size_is_taken_exactly():
    assert kv_pool_bytes(123_456, 16, 8192, 12_288, 16, available=1) == 123_456


def test_default_fills_max_num_seqs_times_max_model_len_in_whole_blocks():
    # 2 sequences of 100 tokens -> 7 blocks of 16 each (112 tokens), 1 KiB a token.
    assert kv_pool_bytes(None, 2, 100, 1024, 16, available=100 * GIB) == 2 * 7 * 16 * 1024


def test_default_is_capped_by_a_share_of_available_memory():
    per_block = 12_288 * 16
    got = kv_pool_bytes(None, 16, 8192, 12_288, 16, available=GIB)
    assert got == int(KV_MEMORY_SHARE * GIB) // per_block * per_block
    assert got < 16 * 8192 * 12_288


def test_default_never_goes_under_one_block():
    assert kv_pool_bytes(None, 16, 8192, 12_288, 16, available=0) == 12_288 * 16


def test_available_memory_is_positive_and_below_physical():
    import os

    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < kv_pool.available_memory() <= physical


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_zeroed_pool_is_zero_and_committed_only_where_written():
    before = resident_bytes()
    pool = zeroed_pool((8, 1 << 20, 2, 8), torch.bfloat16, torch.device("cpu"))   # 256 MiB
    assert resident_bytes() - before < 32 << 20
    layer = pool[5]
    del pool                                                                          # a view keeps the map alive
    layer[:1000] = 1.0
    assert float(layer[:1000].float().sum()) == 1000 * 2 * 8
    assert bool((layer[1000:2000] == 0).all())
    assert resident_bytes() - before < 64 << 20


def test_engine_pool_follows_the_rule_by_default():
    engine = tiny_engine(kv_cache_memory=None, max_num_seqs=3, max_model_len=40, enforce_eager=True)
    # block_size 4 (tiny_engine): 3 sequences x 10 blocks.
    assert engine.runner.num_blocks == 30
    per_block = kv_bytes_per_token(TINY, torch.float32) * 4
    explicit = tiny_engine(kv_cache_memory=7 * per_block, enforce_eager=True)
    assert explicit.runner.num_blocks == 7


def test_engine_config_rejects_a_non_positive_size():
    with pytest.raises(ValueError):
        EngineConfig(kv_cache_memory=0)
