"""glibc's malloc, told to keep the large blocks a step frees, so the next step reuses them instead of faulting in
fresh pages.

A decode step at 16 rows makes a few (16, 151,936) float32 tensors (the lm_head's logits, the temperature-scaled
copy, the softmax): ~9.7 MB each, freed at the end of the step. By default glibc hands blocks that large back to the
kernel (mmap'd, or trimmed off the heap; a thread's own arena deletes a heap that became empty), so every step
touches ~4,800 new pages: measured in-process on the default model, a sampled step at 16 rows took 49.5 ms against
39.8 ms greedy, and with the blocks kept 40.9 against 41.0 (docs/BENCHMARKS.md, "Session 6, later";
tests/test_malloc_tuning.py counts the faults). Served, 16 streams at temperature 0.7 went from 0.80-0.92 of the
greedy throughput to 0.99.

Three settings, through `mallopt`: blocks up to 256 MiB come from the heap, not mmap; the heap is trimmed only past
1 GiB free at its top; and one arena for all threads (a thread's own arena is where empty heaps get deleted; the
engine runs on its own thread under `lucid serve`). The cost: memory a burst used stays with the process (peak RSS
is unchanged; idle RSS after a burst stays near that peak). Linux with glibc only; elsewhere nothing changes.
`LUCID_MALLOC_DEFAULTS=1` leaves malloc as it is.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD_BYTES = 256 << 20
TRIM_THRESHOLD_BYTES = 1 << 30

_done = False


def keep_large_blocks() -> bool:
    """Apply the settings once per process (call it before other threads start for the one-arena part to hold).
    True when glibc took them."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("LUCID_MALLOC_DEFAULTS") == "1":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    took = all(mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), (M_ARENA_MAX, 1)))
    if not took:
        log.debug("mallopt refused a setting; malloc keeps its defaults for it")
    _done = True
    return took
