"""Where replicas post their engine counters each second and the front reads them all in one call: a tiny Ray
actor (no CPU reserved). Serve has no public way to ask each replica of a deployment; the board is that way.
A replica that stops posting (dead, restarting) drops off after MAX_AGE_SECONDS.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ray

POST_EVERY_SECONDS = 1.0
MAX_AGE_SECONDS = 3.0


@ray.remote(num_cpus=0)
class StatsBoard:
    def __init__(self) -> None:
        self._posts: dict[str, tuple[float, dict[str, Any]]] = {}

    def post(self, replica: str, stats: dict[str, Any]) -> None:
        self._posts[replica] = (time.monotonic(), stats)

    def read(self, max_age: float = MAX_AGE_SECONDS) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        for replica in [r for r, (at, _) in self._posts.items() if now - at > max_age]:
            del self._posts[replica]
        return {replica: stats for replica, (_, stats) in self._posts.items()}


def post_forever(board: Any, replica: str, read_stats: Any, stop: threading.Event) -> threading.Thread:
    """In a replica: post `read_stats()` to the board every second until `stop` is set (fire and forget)."""

    def loop() -> None:
        while not stop.wait(POST_EVERY_SECONDS):
            board.post.remote(replica, read_stats())

    thread = threading.Thread(target=loop, name="lucid-stats-post", daemon=True)
    thread.start()
    return thread
