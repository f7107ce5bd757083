"""Engine faults, end to end through HTTP: a row of non-finite logits fails its own request only; a forward that
raises fails the requests of its batch and the engine goes on; a failed stream ends with an error event and [DONE].

The faults are staged in-process on a real tiny engine: its runner and its model's compute_logits are wrapped to
misbehave for the requests whose prompt starts with MARKER.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import torch
from test_reliability_support import InProcessServer, shared_in_process_server, stream_error, wait_idle

pytestmark = pytest.mark.timeout(120)

MARKER = [13, 21, 34, 55]       # prompt token ids that mark a request as the one to break
PACE_SECONDS = 0.01             # each step lasts this long at least, so requests overlap on any machine


class Faults:
    """Wraps the engine so that steps holding a MARKER request misbehave: `nan` puts NaN in those requests' logits
    rows, `raise_forward` makes the whole forward raise."""

    def __init__(self, server: InProcessServer) -> None:
        self.runner = server.engine.engine.runner
        self.model = self.runner.model
        self.nan = False
        self.raise_forward = False
        self._rows: list = []  # the sequences whose logits this step computes, in row order
        run, compute_logits = self.runner.run, self.model.compute_logits

        def paced_run(sched, eos_ids):  # noqa: ANN001, ANN202
            time.sleep(PACE_SECONDS)
            self._rows = [item.seq for item in sched.all if item.samples]
            if self.raise_forward and any(self._marked(item.seq) for item in sched.all):
                raise RuntimeError("simulated: CUDA error: an illegal memory access was encountered")
            return run(sched, eos_ids)

        def poisoned_logits(hidden: torch.Tensor) -> torch.Tensor:
            logits = compute_logits(hidden)  # (B, V)
            for row, seq in enumerate(self._rows):
                if self.nan and self._marked(seq):
                    logits[row] = math.nan
            return logits

        self.runner.run = paced_run
        self.model.compute_logits = poisoned_logits

    @staticmethod
    def _marked(seq) -> bool:  # noqa: ANN001 - lucid.engine.sequence.Sequence
        return seq.token_ids[:len(MARKER)] == MARKER

    def remove(self) -> None:
        del self.runner.run, self.model.compute_logits  # back to the class's methods


@pytest.fixture
def faulty(tiny_model) -> Iterator[tuple[str, Faults]]:
    server = shared_in_process_server(str(tiny_model.hf_dir))
    faults = Faults(server)
    try:
        yield server.url, faults
    finally:
        faults.remove()


def _completion(url: str, prompt: list[int] | str, max_tokens: int, stream: bool = False) -> httpx.Response:
    body = {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=60)


def _payloads(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


def _assert_failed_cleanly(response: httpx.Response, words: str) -> None:
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
    assert words in error["message"], error


def _assert_stream_failed_cleanly(response: httpx.Response, words: str) -> None:
    assert response.status_code == 200  # the stream had started: its failure is told inside it
    payloads = _payloads(response)
    error = stream_error(payloads)
    assert payloads[-1] == "[DONE]" and error is not None, payloads[-3:]
    assert error["type"] == "server_error" and words in error["message"], error


def _started_stream(url: str, max_tokens: int, out: dict) -> threading.Event:
    """A normal streamed completion in the background; the event is set once its first chunk arrived."""
    started = threading.Event()

    def run() -> None:
        body = {"prompt": "Once upon a time", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
        payloads = []
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    payloads.append(line[6:])
                    started.set()
        out["payloads"] = payloads

    out["thread"] = threading.Thread(target=run)
    out["thread"].start()
    return started


def test_non_finite_logits_fail_only_their_request(faulty):
    url, faults = faulty
    faults.nan = True
    others: dict = {}
    assert _started_stream(url, 60, others).wait(30)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        normal = pool.submit(_completion, url, "The quick brown fox", 30)
        poisoned = pool.submit(_completion, url, MARKER, 30)
        poisoned_stream = pool.submit(_completion, url, MARKER + [1, 2], 30, True)
        normal, poisoned, poisoned_stream = normal.result(), poisoned.result(), poisoned_stream.result()
    others["thread"].join(60)

    _assert_failed_cleanly(poisoned, "non-finite logits")
    _assert_stream_failed_cleanly(poisoned_stream, "non-finite logits")
    assert normal.status_code == 200 and normal.json()["usage"]["completion_tokens"] == 30
    stream = others["payloads"]
    assert stream[-1] == "[DONE]" and stream_error(stream) is None
    assert json.loads(stream[-2])["choices"][0]["finish_reason"] == "length"
    wait_idle(url)


def test_a_forward_that_raises_fails_its_batch_and_the_engine_goes_on(faulty):
    url, faults = faulty
    faults.raise_forward = True
    bystander: dict = {}
    assert _started_stream(url, 200, bystander).wait(30)  # in the batch when the forward raises
    _assert_failed_cleanly(_completion(url, MARKER, 10), "model forward")
    bystander["thread"].join(60)
    payloads = bystander["payloads"]
    assert len(payloads) > 2 and stream_error(payloads) is not None and payloads[-1] == "[DONE]"
    assert "model forward" in stream_error(payloads)["message"]
    wait_idle(url)

    after = _completion(url, "Hello again", 8)  # the engine keeps serving
    assert after.status_code == 200 and after.json()["choices"][0]["finish_reason"] == "length"
    streamed = _completion(url, "And streamed", 8, stream=True)
    assert _payloads(streamed)[-1] == "[DONE]" and stream_error(_payloads(streamed)) is None
    assert httpx.get(f"{url}/health").status_code == 200
