"""The engine's thread count: the CPUs the process may use, a cgroup quota included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lucid import threads
from lucid.config import EngineConfig


@pytest.mark.parametrize(("text", "cpus"), [("200000 100000\n", 2), ("150000 100000", 2), ("50000 100000", 1),
                                            ("max 100000", None), ("garbage", None)])
def test_cgroup_quota_is_read_as_whole_cpus(tmp_path: Path, text: str, cpus: int | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert threads.cgroup_cpu_limit(path) == cpus


def test_missing_cgroup_file_means_no_limit(tmp_path: Path) -> None:
    assert threads.cgroup_cpu_limit(tmp_path / "absent") is None


def test_available_cpus_respects_affinity_and_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    assert 1 <= threads.available_cpus() <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1)
    assert threads.available_cpus() == 1


def test_configure_threads_sets_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert threads.configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert threads.configure_threads(None) == threads.available_cpus() == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")   # an explicit pin wins over the machine's count
        assert threads.configure_threads(None) == 1 and torch.get_num_threads() == 1
        assert threads.configure_threads(2) == 2     # and --threads over the pin
    finally:
        torch.set_num_threads(before)


def test_bad_thread_count_is_refused() -> None:
    with pytest.raises(ValueError, match="num_threads"):
        EngineConfig(num_threads=0)
