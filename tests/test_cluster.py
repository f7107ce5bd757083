"""`lucid serve --replicas 2` on a local Ray (2 replicas x 1 CPU, the tiny model): the same API as one process,
outputs equal to the in-process engine's, prefix routing, per-replica metrics, a replica's death, clean shutdown."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time

import httpx
import pytest
from test_server_support import TINY_NAMES, ServerProcess, tiny_server_args

pytest.importorskip("ray.serve", reason="needs lucid[cluster] (ray[serve])")
psutil = pytest.importorskip("psutil")

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

MODEL = TINY_NAMES[0]
SYSTEM = ("You are a careful assistant. Answer in one short paragraph, cite nothing, and keep the tone friendly. "
          "The user writes about language models, tokenizers and caches.")


@pytest.fixture(scope="module")
def cluster(tiny_model):
    server = ServerProcess(*tiny_server_args(tiny_model), "--replicas", "2", "--cpus-per-replica", "1",
                           "--kv-cache-memory", "32M")
    try:  # also when start-up fails or times out: a local Ray must not outlive the test run
        server.wait_ready()
        yield server
    finally:
        server.stop()


def replica_metrics(server: ServerProcess) -> dict[str, dict[str, float]]:
    """Labelled per-replica samples of /metrics: {metric name: {replica id: value}}."""
    samples: dict[str, dict[str, float]] = {}
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        found = re.match(r'(lucid_replica_\w+)\{replica="([^"]+)"[^}]*\} (\S+)', line)
        if found:
            samples.setdefault(found[1], {})[found[2]] = float(found[3])
    return samples


def served_by(server: ServerProcess, before: dict[str, float]) -> list[str]:
    """The replicas whose request counter grew since `before`."""
    after = replica_metrics(server).get("lucid_replica_requests_total", {})
    return [r for r, n in after.items() if n > before.get(r, 0)]


def requests_counter(server: ServerProcess) -> dict[str, float]:
    return replica_metrics(server).get("lucid_replica_requests_total", {})


def ray_processes(server: ServerProcess) -> list[psutil.Process]:
    """The server's descendants (the local Ray: gcs, raylet, `ray::` workers)."""
    return psutil.Process(server.proc.pid).children(recursive=True)


def chat(server: ServerProcess, messages: list[dict], max_tokens: int = 16, **kwargs: object):
    return server.client().chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens,
                                                    temperature=0, **kwargs)


def test_greedy_outputs_equal_the_in_process_engine_and_both_replicas_serve(cluster, tiny_model):
    from engine_fixtures import run_all

    from lucid.engine.llm_engine import LLMEngine
    from lucid.sampling_params import SamplingParams

    prompts = [f"Request {i}: tell me about caches and the number {i * 7}." for i in range(8)]
    before = requests_counter(cluster)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # at once: the router spreads them over both replicas
        results = list(pool.map(lambda p: cluster.client().completions.create(
            model=MODEL, prompt=p, max_tokens=20, temperature=0), prompts))
    assert len(served_by(cluster, before)) == 2

    engine = LLMEngine.from_pretrained(str(tiny_model.hf_dir), dtype="float32", quantization="mixed")
    expected = run_all(engine, [engine.tokenizer.encode(p) for p in prompts], SamplingParams(temperature=0,
                                                                                             max_tokens=20))
    for result, reference in zip(results, expected, strict=True):
        assert result.choices[0].text == reference.outputs[0].text
        assert result.usage.completion_tokens == len(reference.outputs[0].token_ids)


def test_streamed_chunks_concatenate_to_the_non_streamed_result(cluster):
    messages = [{"role": "user", "content": "你好，世界！🌍 Tell me a long story about a fox."}]
    whole = chat(cluster, messages, max_tokens=40)
    chunks = list(chat(cluster, messages, max_tokens=40, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    joined = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert joined == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_conversations_stay_on_one_replica_and_report_cached_tokens(cluster):
    conversations = [[{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": f"Conversation {c}: what does a tokenizer do with the word {w}?"}]
                     for c, w in enumerate(["fox", "river", "autumn", "Paris"])]
    homes: dict[int, set[str]] = {c: set() for c in range(len(conversations))}
    cached: list[int] = []
    for turn in range(3):
        for c, messages in enumerate(conversations):
            before = requests_counter(cluster)
            result = chat(cluster, messages, max_tokens=12)
            homes[c].update(served_by(cluster, before))
            if turn:
                cached.append(result.usage.prompt_tokens_details.cached_tokens)
            messages += [{"role": "assistant", "content": result.choices[0].message.content},
                         {"role": "user", "content": f"And then, turn {turn + 1} of conversation {c}?"}]
    assert all(len(replicas) == 1 for replicas in homes.values()), homes
    assert all(n >= 16 for n in cached), cached          # every follow-up found its history's blocks


def test_engine_errors_keep_their_status_across_the_replica_boundary(cluster):
    bad = httpx.post(f"{cluster.url}/v1/completions", json={"model": MODEL, "prompt": [5, 99999], "max_tokens": 2})
    assert bad.status_code == 400 and "vocabulary" in bad.json()["error"]["message"]
    assert httpx.get(f"{cluster.url}/health").status_code == 200


def test_metrics_show_each_replica(cluster):
    deadline = time.monotonic() + 15  # replicas report their engine stats every second
    while time.monotonic() < deadline:
        samples = replica_metrics(cluster)
        if len(samples.get("lucid_replica_num_requests_running", {})) == 2:
            break
        time.sleep(0.5)
    assert set(samples["lucid_replica_num_requests_waiting"]) == set(samples["lucid_replica_num_requests_running"])
    assert len(samples["lucid_replica_num_requests_running"]) == 2
    assert cluster.metrics()["lucid_replicas_running"] == 2


def test_a_dying_replica_fails_its_stream_with_503_and_the_others_keep_serving(cluster):
    pids = replica_metrics(cluster)["lucid_replica_pid"]
    assert len(pids) == 2
    prompt = [{"role": "user", "content": "Count slowly from one to a thousand, every number in words."}]
    before = requests_counter(cluster)
    stream = cluster.client().chat.completions.create(model=MODEL, messages=prompt, max_tokens=400, temperature=0,
                                                      stream=True, extra_body={"ignore_eos": True})
    next(iter(stream))  # the request is running on one replica: kill that one
    [victim] = served_by(cluster, before)
    os.kill(int(pids[victim]), signal.SIGKILL)
    with pytest.raises(Exception) as failure:  # noqa: B017 - the openai client raises the stream's error event
        for _ in stream:
            pass
    assert "replica serving this request stopped" in str(failure.value), failure.value
    for i in range(4):  # served by the survivor while Serve restarts the dead one
        assert chat(cluster, [{"role": "user", "content": f"Still there? {i}"}], max_tokens=4).choices
    deadline = time.monotonic() + 120
    while cluster.metrics().get("lucid_replicas_running") != 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert cluster.metrics()["lucid_replicas_running"] == 2
    assert httpx.get(f"{cluster.url}/health").status_code == 200


def test_sigterm_drains_and_leaves_no_ray_process(cluster):
    ray_procs = ray_processes(cluster)
    assert any(p.cmdline()[:1] and p.cmdline()[0].startswith("ray::") for p in ray_procs)
    assert cluster.stop(signal.SIGTERM) == 0
    gone, alive = psutil.wait_procs(ray_procs, timeout=30)
    assert not alive, [" ".join(p.cmdline()) for p in alive]


def _ray_workers() -> set[int]:
    return {p.pid for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0].startswith("ray::")}


def test_replicas_that_cannot_load_the_model_say_why_and_leave_nothing(tmp_path):
    """Serve reports only that deploying failed; the server says the replicas' own reason, exits 1, and the local
    Ray goes with it."""
    missing = tmp_path / "missing.gguf"
    before = _ray_workers()
    server = ServerProcess("--model", str(missing), "--replicas", "2", "--cpus-per-replica", "1")
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while server.proc.poll() is None and time.monotonic() < deadline:
            seen |= _ray_workers() - before   # this run's Ray workers, while they live
            time.sleep(0.5)
    finally:
        code = server.stop()
    log = server.log()
    assert code == 1 and seen, log[-3000:]
    failure = next(line for line in log.splitlines() if "Loading the model failed" in line)
    assert f"{missing}: no such file or folder" in failure, failure
    _, alive = psutil.wait_procs([psutil.Process(pid) for pid in seen if psutil.pid_exists(pid)], timeout=30)
    assert not alive, [" ".join(p.cmdline()) for p in alive]
