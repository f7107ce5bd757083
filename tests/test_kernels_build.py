"""Where the compiled kernels live and how a start finds them: keyed on the source folder too, imported directly
when built, and never blocked by the lock file a killed build leaves behind.

The loading tests run in a fresh interpreter (one extension per process) against a copy of this machine's build,
so nothing is compiled here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lucid import kernels
from lucid.kernels import build

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not kernels.available(), reason=f"lucid kernels: {kernels.unavailable_reason()}")]

CHILD = """
import json, sys, time
started = time.perf_counter()
from lucid import kernels
ok = kernels.available()
print(json.dumps({"ok": ok, "error": kernels.unavailable_reason(), "file": kernels.ext().__file__ if ok else None,
                  "used_cpp_extension": "torch.utils.cpp_extension" in sys.modules}))
"""


@pytest.fixture
def cache_copy(tmp_path: Path) -> Path:
    """A cache folder holding a copy of this machine's finished build (same key: same sources and folder)."""
    built = Path(kernels.ext().__file__).parent
    target = tmp_path / "kernels" / built.name
    shutil.copytree(built, target, ignore=shutil.ignore_patterns(build.OUR_LOCK, build.TORCH_BATON))
    (target / build.BUILT_MARKER).write_text(Path(kernels.ext().__file__).name + "\n")
    return tmp_path


def _load_in_child(cache: Path) -> dict:
    env = {**os.environ, "LUCID_CACHE_DIR": str(cache), "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_finished_build_is_imported_directly(cache_copy: Path) -> None:
    result = _load_in_child(cache_copy)
    assert result["ok"] and result["file"].startswith(str(cache_copy))
    assert not result["used_cpp_extension"]          # no ninja run, no torch build machinery on a warm start


def test_a_killed_builds_lock_does_not_block_the_next_start(cache_copy: Path) -> None:
    folder = next((cache_copy / "kernels").iterdir())
    (folder / build.BUILT_MARKER).unlink()           # as a build killed before it finished leaves it
    (folder / build.TORCH_BATON).touch()             # torch's lock: its next build would wait on it forever
    result = _load_in_child(cache_copy)              # (the objects are up to date: ninja only checks them)
    assert result["ok"], result["error"]
    assert result["used_cpp_extension"]
    assert not (folder / build.TORCH_BATON).exists() and (folder / build.BUILT_MARKER).is_file()


def test_the_build_folder_is_keyed_on_the_sources_and_their_folder(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    flags = {"avx512f", "avx512_vnni"}
    here = build.build_dir(flags)
    assert build.build_dir(flags) == here and build.build_dir(flags | {"sse2"}) != here
    copy = tmp_path / "checkout" / "kernels"          # the same sources in another checkout
    shutil.copytree(build.HERE, copy)
    monkeypatch.setattr(build, "HERE", copy)
    monkeypatch.setattr(build, "SOURCES", [copy / s.name for s in build.SOURCES])
    monkeypatch.setattr(build, "HEADERS", [copy / h.name for h in build.HEADERS])
    elsewhere = build.build_dir(flags)
    assert elsewhere != here and elsewhere.parent == here.parent
    (copy / "qgemm.h").write_text((copy / "qgemm.h").read_text() + "\n// edited\n")
    assert build.build_dir(flags) != elsewhere
