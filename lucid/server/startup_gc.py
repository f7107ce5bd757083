"""`lucid serve`'s start-up without Python's cyclic garbage collector.

Start-up creates ~300,000 objects that live as long as the process (torch's and FastAPI's modules, pydantic models,
the tokenizer's vocabulary), and almost no garbage. With the collector on, every few thousand new objects trigger a
collection that re-scans them: measured, 15-20% of start-up's CPU (benchmarks/startup.py --gc-compare). So the
server pauses automatic collections while it starts, freezes what its imports made (FastAPI's and lucid's in the
main thread, torch's in the loading thread; the collector never scans them again, which keeps ~1 MB of import-time
cyclic garbage that a collection would cost ~0.2 s to find), and resumes collecting once the engine is loaded.
The engine collects and freezes its own long-lived objects as it is built (LLMEngine.from_pretrained), so the
loading phase's garbage is freed there.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Stop automatic collections until `resume` (a no-op when the collector is already off)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def freeze_imports() -> None:
    """Move every object alive now (the imported modules) out of the collector's sight for good."""
    gc.freeze()


def resume() -> None:
    """Turn automatic collections back on, if `pause` turned them off."""
    global _paused
    if _paused:
        _paused = False
        gc.enable()
