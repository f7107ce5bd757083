"""Prometheus metrics of one server, in a registry of its own (two apps in one process never collide)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from lucid.server.state import ServerState

# Latencies of a CPU-served small model span milliseconds to many seconds.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lucid_requests", "HTTP requests answered, by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("lucid_prompt_tokens", "Prompt tokens of admitted requests.", registry=r)
        self.generation_tokens = Counter("lucid_generation_tokens", "Tokens generated.", registry=r)
        self.finished = Counter("lucid_request_finished", "Generation requests finished, by finish reason.",
                                ["finish_reason"], registry=r)
        self.ttft = Histogram("lucid_time_to_first_token_seconds", "Time from arrival to the first generated token.",
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("lucid_inter_token_latency_seconds", "Time between successive generated tokens.",
                             buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("lucid_request_latency_seconds", "Time from arrival to the last generated token.",
                             buckets=E2E_BUCKETS, registry=r)
        self.running = Gauge("lucid_num_requests_running", "Sequences in the running batch.", registry=r)
        self.waiting = Gauge("lucid_num_requests_waiting", "Sequences in the waiting queue.", registry=r)
        self.kv_usage = Gauge("lucid_kv_cache_usage_ratio", "Fraction of KV-cache blocks in use (0 to 1).", registry=r)
        self.kv_used = Gauge("lucid_kv_cache_used_blocks", "KV-cache blocks in use.", registry=r)
        self.kv_total = Gauge("lucid_kv_cache_total_blocks", "KV-cache blocks in the pool.", registry=r)
        self.preemptions = Gauge("lucid_num_preemptions", "Sequences preempted since start (engine counter).",
                                 registry=r)
        self.steps = Gauge("lucid_engine_steps", "Engine steps (batched forwards) since start (engine counter).",
                           registry=r)
        self.spec_drafted = Gauge("lucid_spec_decode_num_draft_tokens",
                                  "Speculative decoding: tokens drafted since start (engine counter).", registry=r)
        self.spec_accepted = Gauge("lucid_spec_decode_num_accepted_tokens",
                                   "Speculative decoding: drafted tokens the model kept (engine counter).", registry=r)
        self.kv_reused = Gauge("lucid_kv_cache_reused_tokens",
                               "Prompt tokens whose K/V was copied from other positions (--cache-reuse, FIM) since "
                               "start (engine counter).", registry=r)
        self.in_flight = Gauge("lucid_http_requests_in_flight", "API requests being served.", registry=r)
        self.ready = Gauge("lucid_ready", "1 when the model is loaded and the engine runs, else 0.", registry=r)
        self._state: ServerState | None = None

    def bind(self, state: ServerState) -> None:
        self._state = state

    def render(self) -> bytes:
        """The text exposition; engine gauges are read now, so a scrape sees the current step's numbers."""
        state = self._state
        if state is not None:
            self.in_flight.set(state.in_flight)
            self.ready.set(1 if state.unavailable_reason() is None else 0)
            if state.engine is not None:
                stats = state.engine.stats()
                self.running.set(stats.num_running)
                self.waiting.set(stats.num_waiting)
                self.kv_usage.set(stats.kv_usage)
                self.kv_used.set(stats.num_used_blocks)
                self.kv_total.set(stats.num_total_blocks)
                self.preemptions.set(stats.num_preemptions)
                self.steps.set(stats.num_steps)
                self.spec_drafted.set(stats.num_draft_tokens)
                self.spec_accepted.set(stats.num_accepted_tokens)
                self.kv_reused.set(stats.num_reused_tokens)
        return generate_latest(self.registry)
