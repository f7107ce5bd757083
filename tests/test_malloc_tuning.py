"""lucid.malloc_tuning: sampled decode steps at 16 rows reuse the memory the previous step freed instead of
faulting in ~4,800 fresh pages a step (their logits-sized tensors), and `LUCID_MALLOC_DEFAULTS=1` turns it off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")]


def run(script: str, *args: str, defaults: bool = False) -> str:
    env = {**os.environ, "LUCID_MALLOC_DEFAULTS": "1" if defaults else "0"}
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=280,
                         check=True, env=env)
    return out.stdout.strip().splitlines()[-1]


def test_the_settings_take_once_and_can_be_turned_off():
    script = "from lucid.malloc_tuning import keep_large_blocks as k; print(k(), k())"
    assert run(script) == "True True"
    assert run(script, defaults=True) == "False False"


# The default model as lucid serves it, 16 sequences at temperature 0.7: minor page faults per decode step.
STEPS = """
import resource, time
from lucid import LLM, SamplingParams
from lucid.config import DEFAULT_QUANTIZATION
llm = LLM(None, quantization=DEFAULT_QUANTIZATION)
engine = llm.engine
for i in range(16):
    engine.add_request(f"r{i}", [9707, 11, 1879, 0, 100 + i], SamplingParams(temperature=0.7, max_tokens=24,
                                                                              ignore_eos=True))
engine.step(); engine.step()
before, steps = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, 0
while engine.has_unfinished():
    engine.step(); steps += 1
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // steps)
"""


@pytest.mark.slow
def test_sampled_steps_at_16_rows_reuse_freed_memory(real_gguf_path):
    tuned, default = int(run(STEPS)), int(run(STEPS, defaults=True))
    assert tuned < 1000, tuned
    assert default > 3 * tuned, (default, tuned)  # what the tuning saves on this machine's glibc
