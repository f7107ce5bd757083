"""`lucid serve`'s start-up: the garbage collector paused while it starts and back on once the engine is loaded
(lucid.server.startup_gc), and a command-line module that imports nothing heavy before that pause."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from lucid.server import startup_gc
from lucid.server.cli_serve import _resuming_gc


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    yield
    startup_gc.resume()
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_pause_stops_automatic_collections_until_resume() -> None:
    gc.enable()
    startup_gc.pause()
    assert not gc.isenabled()
    startup_gc.resume()
    assert gc.isenabled()


def test_resume_leaves_a_collector_it_did_not_pause_alone() -> None:
    gc.disable()           # someone else's choice (an embedding application, a profiler)
    startup_gc.pause()
    startup_gc.resume()
    assert not gc.isenabled()
    gc.enable()
    startup_gc.resume()    # never paused: nothing to undo
    assert gc.isenabled()


def test_the_loader_resumes_collections_after_loading_and_after_failing() -> None:
    gc.enable()
    startup_gc.pause()
    seen_during_load = []
    engine = _resuming_gc(lambda: seen_during_load.append(gc.isenabled()) or "engine")()
    assert engine == "engine" and seen_during_load == [False] and gc.isenabled()

    def broken() -> None:
        raise RuntimeError("no such model")

    startup_gc.pause()
    with pytest.raises(RuntimeError, match="no such model"):
        _resuming_gc(broken)()
    assert gc.isenabled()


def test_the_serve_command_line_imports_nothing_heavy() -> None:
    # run_serve pauses the collector before FastAPI, uvicorn and torch are imported; building the command line
    # (`lucid serve` builds every subcommand's arguments) must not have imported them, nor `lucid bench`'s httpx
    # and rich, already.
    code = ("import sys, lucid.cli, lucid.server.cli_serve\n"
            "lucid.cli.build_parser()\n"
            "heavy = ('torch', 'fastapi', 'uvicorn', 'pydantic', 'numpy', 'httpx', 'rich')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_the_app_opens_its_socket_before_torch_is_imported() -> None:
    # torch loads in the loading thread (lucid.server.cli_serve._loader) while /health already answers 503; the
    # glass box's tensor code is imported with its first request.
    code = "import sys, lucid.server.app\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
