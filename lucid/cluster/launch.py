"""Bringing the replicas up and down: Ray (a local instance sized to the machine, or an existing cluster's address),
Ray Serve without its HTTP proxy (lucid's own front is the only way in), and the replica deployment with lucid's
prefix router. Returns the ClusterEngine the server runs on.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import replace

import ray
from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.schema import LoggingConfig

from lucid.cluster.client import ClusterEngine
from lucid.cluster.messages import ReplicaSpec
from lucid.cluster.prefix_router import PrefixAffinityRouter
from lucid.cluster.replica import LucidReplica
from lucid.cluster.stats_board import StatsBoard
from lucid.config import EngineConfig
from lucid.errors import ModelLoadError
from lucid.threads import available_cpus

log = logging.getLogger("lucid.cluster")

APP_NAME = "lucid"
DEPLOYMENT_NAME = "LucidReplica"
LOCAL_OBJECT_STORE_BYTES = 256 << 20  # replicas exchange small messages; Ray's default would reserve 30% of RAM
ROUTERS = {"prefix": PrefixAffinityRouter, "default": None}  # "default": Serve's power-of-two-choices router


def start_ray(address: str | None, min_cpus: int) -> bool:
    """Connect to the cluster at `address`, or start a local Ray with the machine's CPUs (at least `min_cpus`).
    Returns True when the Ray instance is ours (local) and stops with us."""
    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "configure_logging": False, "log_to_driver": True}
    if address:
        ray.init(address=address, **common)
        return False
    # Ray starts its workers at nice 15 (background priority); here the workers are the engines doing all the work,
    # so they run at the front's priority, as one lucid process would.
    ray.init(num_cpus=max(available_cpus(), min_cpus), object_store_memory=LOCAL_OBJECT_STORE_BYTES,
             _system_config={"worker_niceness": 0}, **common)
    return True


def deploy(spec: ReplicaSpec, num_replicas: int, cpus_per_replica: int, on_shutdown: Callable[[], None],
           router: str = "prefix", imbalanced_threshold: int = 4) -> ClusterEngine:
    """Run `num_replicas` replicas of `spec` and return the front's engine for them (blocks until they serve)."""
    engine_config = spec.engine_config
    if engine_config.num_threads is None:  # each replica computes with the CPUs Serve reserved for it
        spec = replace(spec, engine_config=replace(engine_config, num_threads=cpus_per_replica))
    router_config = RequestRouterConfig(request_routing_stats_period_s=1.0, request_routing_stats_timeout_s=5.0)
    if ROUTERS[router] is not None:
        router_config = RequestRouterConfig(
            request_router_class=ROUTERS[router], request_routing_stats_period_s=1.0,
            request_routing_stats_timeout_s=5.0,
            request_router_kwargs={"block_size": engine_config.block_size,
                                   "imbalanced_threshold": imbalanced_threshold})
    board = StatsBoard.remote()  # owned by this process: it goes when we do
    spec = replace(spec, stats_board=board)
    threads = str(spec.engine_config.num_threads)
    deployment = serve.deployment(LucidReplica, name=DEPLOYMENT_NAME).options(
        num_replicas=num_replicas,
        ray_actor_options={"num_cpus": cpus_per_replica,
                           "runtime_env": {"env_vars": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}}},
        # Serve queues above this in the front; past the engine's own limits its 429 should answer first.
        max_ongoing_requests=engine_config.max_num_seqs + engine_config.max_queue,
        request_router_config=router_config,
        health_check_period_s=2.0, health_check_timeout_s=30.0, graceful_shutdown_timeout_s=5.0,
        logging_config=LoggingConfig(enable_access_log=False))  # the front logs each request already
    serve.start(proxy_location="Disabled")
    try:
        handle = serve.run(deployment.bind(spec), name=APP_NAME, route_prefix=None)
    except RuntimeError as exc:  # Serve says only that deploying failed; the replicas' own error says why
        raise replica_failure(exc) from exc
    info = handle.describe.remote().result()
    return ClusterEngine(handle, info, APP_NAME, DEPLOYMENT_NAME, num_replicas, board, on_shutdown)


def replica_failure(exc: RuntimeError) -> Exception:
    """The reason the replicas could not start, from the last error line of their status message (the replica
    constructor's traceback, as Serve keeps it): a ModelLoadError stays one, so the server reports it as the
    single-process server does ("Loading the model failed: /x.gguf: no such file or folder ...")."""
    try:
        application = serve.status().applications.get(APP_NAME)
        messages = [d.message for d in application.deployments.values()] if application else []
    except Exception:  # noqa: BLE001 - no status to read: Serve's own error is all there is
        return exc
    for message in messages:
        lines = [line.strip() for line in (message or "").splitlines()]
        reason = next((line for line in reversed(lines) if re.match(r"[\w.]+(Error|Exception): ", line)), None)
        if reason is None:
            continue
        kind, _, text = reason.partition(": ")
        if kind.endswith("ModelLoadError"):
            return ModelLoadError(text)
        return RuntimeError(f"the replicas could not start: {reason}")
    return exc


def stop(own_ray: bool) -> None:
    """Remove the replicas (and, for a local Ray, Ray itself: no `ray::` process stays behind)."""
    log.info("Stopping the replicas%s", " and the local Ray" if own_ray else "")
    try:
        if ray.is_initialized():
            serve.shutdown() if own_ray else serve.delete(APP_NAME)
            log.info("Replicas stopped")
    except Exception as exc:  # noqa: BLE001 - still stop Ray below
        log.warning("stopping Serve: %s", exc)
    finally:
        if ray.is_initialized():
            ray.shutdown()


class RayOwner:
    """The thread that starts Ray, stays alive while Ray runs, and stops it. A local Ray's own processes (gcs,
    raylet) are started with a parent-death signal, which Linux sends when the spawning *thread* ends: started from
    the server's short-lived loading thread, they would be killed the moment loading finished."""

    def __init__(self, address: str | None, min_cpus: int) -> None:
        self.address, self.min_cpus = address, min_cpus
        self.own_ray = False
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lucid-ray", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.own_ray = start_ray(self.address, self.min_cpus)
        except BaseException as exc:  # noqa: BLE001 - raised again by start(), in the loading thread
            self._error = exc
        self._ready.set()
        if self._error is None:
            self._stopping.wait()
            stop(self.own_ray)


def cluster_loader(args: argparse.Namespace, engine_config: EngineConfig, quantization: str,
                   device: str) -> Callable[[], ClusterEngine]:
    """The ServerState loader for `lucid serve --replicas N`: start Ray and Serve, deploy, return the engine."""

    def load() -> ClusterEngine:
        owner = RayOwner(args.ray_address, args.replicas * (args.cpus_per_replica or 1))
        owner.start()
        try:
            cpus = args.cpus_per_replica or max(1, int(ray.cluster_resources().get("CPU", 1)) // args.replicas)
            log.info("Starting %d replica(s) x %d CPU on Ray (%s)", args.replicas, cpus,
                     args.ray_address or "local instance")
            # A local path is made absolute: the replicas' workers do not start in this process's directory.
            model = os.path.abspath(args.model) if args.model and os.path.exists(args.model) else args.model
            spec = ReplicaSpec(model, engine_config, device, args.dtype, quantization)
            return deploy(spec, args.replicas, cpus, owner.stop, router=args.replica_router)
        except BaseException:
            owner.stop()
            raise

    return load
