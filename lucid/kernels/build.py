"""Compiling lucid's C++ extension once per machine and loading it fast on every later start.

The build folder is keyed on everything the compiled code depends on: the CPU's flags (-march=native), the torch
version, the sources' contents and the folder they are in (ninja's build file names the sources by absolute path,
so two checkouts sharing one folder would rebuild it for each other, a minute or more each time).

A finished build leaves a marker; later starts import the .so directly (~10 ms) instead of going through
`torch.utils.cpp_extension.load`, which re-runs ninja and can take a second. Builds are serialized with an
`flock` (released by the kernel when its holder dies), so a build killed half-way cannot block later starts: the
lock file torch's own build leaves behind (`lock`, waited on forever by the next build) is removed while we hold it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

NAME = "lucid_kernels"
HERE = Path(__file__).parent
SOURCES = [HERE / name for name in ("qgemm.cpp", "decode.cpp", "module.cpp")]
HEADERS = [HERE / name for name in ("qgemm.h", "decode.h", "ops.h")]
CFLAGS = ["-O3", "-march=native", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
BUILT_MARKER = "built.ok"     # written after a successful build: the .so beside it is complete
OUR_LOCK = "lucid-build.lock"  # flock'ed while building
TORCH_BATON = "lock"           # torch.utils.cpp_extension's lock file (created with O_EXCL, never cleaned up)


def build_dir(cpu_flags: set[str]) -> Path:
    """$LUCID_CACHE_DIR/kernels/torch<version>-<key> for these sources, in this folder, on this CPU."""
    root = Path(os.environ.get("LUCID_CACHE_DIR") or Path.home() / ".cache" / "lucid").expanduser()
    digest = hashlib.sha1(" ".join(sorted(cpu_flags)).encode())
    digest.update(str(HERE.resolve()).encode())
    digest.update(" ".join(CFLAGS + LDFLAGS).encode())
    for path in SOURCES + HEADERS:
        digest.update(path.read_bytes())
    return root / "kernels" / f"torch{torch.__version__.replace('+', '_')}-{digest.hexdigest()[:10]}"


def _import_built(build: Path) -> ModuleType | None:
    """The finished build's module, or None when there is none (or it will not import: then it is rebuilt)."""
    marker = build / BUILT_MARKER
    if not marker.is_file():
        return None
    library = build / marker.read_text().strip()  # the file cpp_extension.load imported (its name: the cache
    if not library.is_file():                     # folder may have moved)
        return None
    try:
        spec = importlib.util.spec_from_file_location(NAME, library)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module
    except ImportError as exc:
        log.warning("rebuilding lucid's kernels: the cached build in %s does not load (%s)", build, exc)
        (build / BUILT_MARKER).unlink(missing_ok=True)
        return None


def _put_ninja_on_path() -> None:
    """PyTorch builds with `ninja` from PATH; the pip package (a dependency) lives in the venv, which a plain
    `.venv/bin/python` does not put on PATH."""
    try:
        import ninja
    except ImportError:
        return
    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def load_extension(cpu_flags: set[str]) -> ModuleType:
    """The compiled module: the cached build when there is one, else built now (raises what the build raises)."""
    build = build_dir(cpu_flags)
    module = _import_built(build)
    if module is not None:
        return module
    build.mkdir(parents=True, exist_ok=True)
    with open(build / OUR_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # another process building the same folder: wait for it, then reuse
        module = _import_built(build)
        if module is not None:
            return module
        # We hold the folder: a baton left here is a killed build's, and torch would wait on it forever.
        (build / TORCH_BATON).unlink(missing_ok=True)
        from torch.utils import cpp_extension

        _put_ninja_on_path()
        log.info("compiling lucid's CPU kernels in %s (once per machine, ~30 s)", build)
        module = cpp_extension.load(name=NAME, sources=[str(s) for s in SOURCES], build_directory=str(build),
                                    extra_cflags=CFLAGS, extra_ldflags=LDFLAGS, verbose=False)
        (build / BUILT_MARKER).write_text(f"{Path(module.__file__).name}\n")
        return module
