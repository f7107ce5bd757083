"""Per-replica gauges for the front's /metrics: added to the server's own registry, read at each scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from lucid.server.state import ServerState

_GAUGES = (("running", "lucid_replica_num_requests_running", "Sequences in the replica's running batch."),
           ("waiting", "lucid_replica_num_requests_waiting", "Sequences in the replica's waiting queue."),
           ("used_blocks", "lucid_replica_kv_cache_used_blocks", "KV-cache blocks in use on the replica."),
           ("pid", "lucid_replica_pid", "The replica's process id on its node (which `ray::` process it is)."))


class ReplicaCollector(Collector):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        engine = self.state.engine
        if engine is None or not hasattr(engine, "replica_stats"):
            return
        stats = engine.replica_stats()
        for key, name, doc in _GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["replica"])
            for replica, values in sorted(stats.items()):
                family.add_metric([replica], float(values.get(key, 0)))
            yield family
        served = CounterMetricFamily("lucid_replica_requests", "Requests routed to each replica.", labels=["replica"])
        for replica, count in sorted(engine.requests_by_replica.items()):
            served.add_metric([replica], float(count))
        yield served
        yield GaugeMetricFamily("lucid_replicas_running", "Replicas Ray Serve reports running.",
                                value=float(engine.running_replicas))


def register_replica_metrics(state: ServerState) -> None:
    state.metrics.registry.register(ReplicaCollector(state))
