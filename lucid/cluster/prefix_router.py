"""Prefix-affinity routing on Ray Serve's RequestRouter API: a prompt goes to the replica that already holds the
longest prefix of it (the same system prompt, the same chat history), so that replica's prefix cache skips that part
of the prefill; unless that replica is busier than the least busy one by more than `imbalanced_threshold` requests,
in which case load wins. Prompts that match little go to the least busy replica.

Serve runs one router per deployment handle, in the process that holds the handle (lucid's front), so the prefix
table lives here, in memory, with no extra actor or remote call on the request path. Ray's own
PrefixCacheAffinityRouter (ray.llm) does the same on prompt text, but is importable only with `ray[llm]`.
"""

from __future__ import annotations

from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from lucid.cluster.prefix_table import DEFAULT_MAX_HASHES, PrefixTable, block_hashes


def _prompt_tokens(pending_request: PendingRequest | None) -> list[int] | None:
    if pending_request is None:
        return None
    for arg in pending_request.args:
        tokens = getattr(arg, "prompt_token_ids", None)
        if tokens is not None:
            return tokens
    return None


class PrefixAffinityRouter(RequestRouter):
    def initialize_state(self, block_size: int = 16, imbalanced_threshold: int = 4, match_rate_threshold: float = 0.3,
                         max_hashes: int = DEFAULT_MAX_HASHES) -> None:
        """block_size: the engine's KV block size (prefixes are matched in whole blocks, as the engine caches them);
        imbalanced_threshold: how many more requests in flight the prefix holder may have than the least busy
        replica and still get the request; match_rate_threshold: the share of the prompt a prefix must cover to
        count (below it, e.g. a shared system prompt alone, the least busy replica is better)."""
        if imbalanced_threshold < 0 or not 0 <= match_rate_threshold <= 1:
            raise ValueError("imbalanced_threshold must be >= 0 and match_rate_threshold in [0, 1]")
        self.table = PrefixTable(block_size, max_hashes)
        self.imbalanced_threshold = imbalanced_threshold
        self.match_rate_threshold = match_rate_threshold

    def _load(self, replica: RunningReplica) -> int:
        """Requests in flight on a replica: Serve's queue-length cache (probed, plus what this router sent since),
        else the replica's last reported engine stats."""
        queue_len = self.replica_queue_len_cache.get(replica.replica_id)
        if queue_len is not None:
            return queue_len
        stats = replica.routing_stats or {}
        return int(stats.get("running", 0)) + int(stats.get("waiting", 0))

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        """Ranks of replicas, best first: [[prefix holder], [the rest]] when affinity applies, else one rank of all
        (Serve then probes their queue lengths and takes the least busy)."""
        if not candidate_replicas:
            return []
        tokens = _prompt_tokens(pending_request)
        if tokens:
            by_id = {r.replica_id: r for r in candidate_replicas}
            load = {replica_id: self._load(r) for replica_id, r in by_id.items()}
            holders, matched = self.table.longest_match(block_hashes(tokens, self.table.block_size), by_id)
            if matched and matched >= self.match_rate_threshold * len(tokens):
                best = min(holders, key=lambda replica_id: load[replica_id])
                if load[best] - min(load.values()) <= self.imbalanced_threshold:
                    return [[by_id[best]], [r for replica_id, r in by_id.items() if replica_id != best]]
        return [list(candidate_replicas)]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        tokens = _prompt_tokens(pending_request)
        if tokens:
            self.table.record(block_hashes(tokens, self.table.block_size), replica_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.table.forget_replica(replica_id)
