"""How many threads the engine computes with: the CPUs this process may actually use.

PyTorch starts with one thread per core it sees, but in a container that core count can be the host's while a CPU
quota or affinity mask allows far fewer; more threads than CPUs makes every parallel matmul wait on preempted
threads. So lucid asks the scheduler (affinity) and the cgroup (cpu.max quota) and takes the smaller.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> int | None:
    """CPUs allowed by a cgroup v2 quota ("200000 100000" -> 2), or None when there is no quota."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus() -> int:
    """The CPUs this process can run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return min(cpus, limit) if limit else cpus


def configure_threads(requested: int | None = None) -> int:
    """Set PyTorch's (and so lucid's kernels') thread count: `requested`, else $OMP_NUM_THREADS when set (the
    usual way to pin a process's threads, as benchmarks do), else every available CPU. Returns it."""
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    if requested and requested > 0:
        threads = requested
    elif from_env.isdigit() and int(from_env) > 0:
        threads = int(from_env)
    else:
        threads = available_cpus()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    log.info("computing with %d thread(s)", threads)
    return threads
