"""The prefix router's memory (lucid.cluster.prefix_table): pure Python, no Ray needed."""

from __future__ import annotations

from lucid.cluster.prefix_table import PrefixTable, block_hashes


def test_block_hashes_chain_whole_prefixes():
    a = block_hashes(list(range(10)), 4)
    assert len(a) == 2  # only full blocks: the last 2 tokens are no block yet
    assert block_hashes(list(range(8)) + [99, 98], 4) == a
    # the same block after a different prefix is a different block
    assert block_hashes([7, 7, 7, 7] + list(range(4, 8)), 4)[1] != a[1]


def test_longest_match_narrows_to_the_holders_of_the_longest_prefix():
    table = PrefixTable(block_size=2)
    system = [1, 2, 3, 4]
    table.record(block_hashes(system + [5, 6], 2), "A")
    table.record(block_hashes(system + [7, 8], 2), "B")
    holders, matched = table.longest_match(block_hashes(system + [5, 6, 9, 9], 2), ["A", "B"])
    assert holders == {"A"} and matched == 6
    holders, matched = table.longest_match(block_hashes(system + [0, 0], 2), ["A", "B"])
    assert holders == {"A", "B"} and matched == 4  # the shared system prompt: both hold it
    holders, matched = table.longest_match(block_hashes([9, 9, 9, 9], 2), ["A", "B"])
    assert holders == {"A", "B"} and matched == 0
    holders, matched = table.longest_match(block_hashes(system + [5, 6], 2), ["B"])  # A is not a candidate now
    assert holders == {"B"} and matched == 4


def test_dead_replicas_are_forgotten_and_the_table_is_bounded():
    table = PrefixTable(block_size=1, max_hashes=3)
    table.record(block_hashes([1, 2], 1), "A")
    table.record(block_hashes([1, 2], 1), "B")
    table.forget_replica("A")
    assert table.longest_match(block_hashes([1, 2], 1), ["A", "B"]) == ({"B"}, 2)
    table.record(block_hashes([5, 6, 7], 1), "A")  # 5 hashes > 3: the least recently used go first
    assert len(table) == 3
    assert table.longest_match(block_hashes([1, 2], 1), ["A", "B"]) == ({"A", "B"}, 0)
    assert table.longest_match(block_hashes([5, 6, 7], 1), ["A", "B"]) == ({"A"}, 3)
