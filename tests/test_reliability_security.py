"""Security: with --api-key every path but /health and the page needs the key, compared in constant time; the server
binds 127.0.0.1 by default and says so; CORS is off unless asked for; and no request makes the server read a file."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient
from test_reliability_support import shared_in_process_server
from test_server_support import ServerProcess, shared_server, tiny_server_args

from lucid.server import middleware
from lucid.server.app import _log_exposure, build_app
from lucid.server.state import ServerSettings, ServerState

pytestmark = pytest.mark.timeout(120)

KEY = "s3cret"
HI = [{"role": "user", "content": "Hi"}]
# Every route the app has, with a body that is valid where one is needed, plus paths it does not have.
KEYED = [("GET", "/v1/models", None), ("POST", "/v1/chat/completions", {"messages": HI, "max_tokens": 1}),
         ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 1}), ("POST", "/tokenize", {"prompt": "Hi"}),
         ("POST", "/detokenize", {"tokens": [1]}), ("GET", "/metrics", None), ("GET", "/docs", None),
         ("GET", "/redoc", None), ("GET", "/openapi.json", None), ("GET", "/docs/oauth2-redirect", None),
         ("GET", "/v1/nowhere", None), ("POST", "/admin", {}),
         ("POST", "/glassbox/token", {"token_ids": [1, 2]}), ("POST", "/glassbox/fork", {"token_ids": [1]}),
         ("GET", "/glassbox/engine", None)]
OPEN = ["/health", "/", "/static/app.js", "/engine"]


@pytest.fixture(scope="module")
def keyed_server(tiny_model) -> ServerProcess:
    return shared_server(*tiny_server_args(tiny_model), "--api-key", KEY)  # as test_server_errors' keyed_server


@pytest.fixture(scope="module")
def tiny_server(tiny_model) -> ServerProcess:
    return shared_server(*tiny_server_args(tiny_model))


def _call(url: str, method: str, path: str, body: dict | None, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=30)


def test_every_path_but_health_and_the_page_needs_the_key(keyed_server):
    url = keyed_server.url
    documented = httpx.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()["paths"]
    checked = {path for _, path, _ in KEYED} | set(OPEN)
    assert set(documented) <= checked, "a new route: add it to KEYED or OPEN"
    for method, path, body in KEYED:
        for key in (None, "wrong", KEY[:-1], KEY + "x", KEY.upper()):
            response = _call(url, method, path, body, key)
            assert response.status_code == 401, (method, path, key, response.status_code)
            assert response.json()["error"]["code"] == "invalid_api_key"
        assert _call(url, method, path, body, KEY).status_code != 401, (method, path)
    for path in OPEN:
        assert httpx.get(f"{url}{path}").status_code == 200, path


def test_keys_are_compared_in_constant_time(monkeypatch):
    compared = []

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return given == expected

    monkeypatch.setattr(middleware.hmac, "compare_digest", spy)
    client = TestClient(build_app(ServerState(lambda: None, ServerSettings(api_key=KEY))))
    assert client.get("/v1/models", headers={"Authorization": "Bearer guess"}).status_code == 401
    assert compared == [(b"Bearer guess", f"Bearer {KEY}".encode())]


def test_binds_loopback_by_default_and_says_so(tiny_server):
    assert f"Listening on 127.0.0.1:{tiny_server.port}: only this machine can connect" in tiny_server.log()
    listening = [c.laddr for c in psutil.Process(tiny_server.proc.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening


def test_an_open_bind_without_a_key_is_warned_about(caplog):
    with caplog.at_level(logging.INFO, logger="lucid.server"):
        _log_exposure(ServerSettings(host="0.0.0.0", port=8000))
        _log_exposure(ServerSettings(host="0.0.0.0", port=8000, api_key="k"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "no --api-key" in warnings[0] and "no --api-key" not in warnings[1]


def test_cors_is_off_unless_origins_are_given(tiny_server):
    evil = {"Origin": "http://evil.example"}
    simple = httpx.get(f"{tiny_server.url}/v1/models", headers=evil)
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers
    preflight = httpx.options(f"{tiny_server.url}/v1/chat/completions",
                              headers={**evil, "Access-Control-Request-Method": "POST"})
    assert not any(h.startswith("access-control-") for h in preflight.headers)

    state = ServerState(lambda: None, ServerSettings(allowed_origins=["http://ok.example"]))
    client = TestClient(build_app(state))
    allowed = client.get("/health", headers={"Origin": "http://ok.example"})
    assert allowed.headers["access-control-allow-origin"] == "http://ok.example"
    assert "access-control-allow-origin" not in client.get("/health", headers=evil).headers


def _raw_get(port: int, target: str) -> bytes:
    """A GET with the request target sent exactly as given (clients would normalize the dots away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


TRAVERSALS = ["/static/../../../../../../etc/passwd", "/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
              "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/static/....//....//etc/passwd",
              "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/..%2f..%2f..%2f..%2fetc/passwd",
              "/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/state.py"]


def test_no_path_traversal_through_static_files(tiny_server):
    for target in TRAVERSALS:
        raw = _raw_get(tiny_server.port, target)
        status = int(raw.split(b" ", 2)[1])
        assert status in (400, 404), (target, raw[:200])
        assert b"root:" not in raw and b"def build_app" not in raw and b"class ServerState" not in raw, target


@pytest.fixture
def opened_files() -> list[str]:
    """Paths this process opens while the test runs (an audit hook cannot be removed, so it is switched off)."""
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if active[0] and event == "open" and isinstance(args[0], str | bytes):
            seen.append(str(args[0]))

    sys.addaudithook(hook)
    yield seen
    active[0] = False


def test_no_request_reads_a_file(tiny_model, tmp_path, opened_files):
    server = shared_in_process_server(str(tiny_model.hf_dir))
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CANARY")
    paths = [str(secret), f"file://{secret}", f"@{secret}", "/etc/passwd", "../../../../etc/passwd",
             str(tiny_model.hf_dir), str(Path(tiny_model.hf_dir) / "config.json")]
    opened_files.clear()
    answers = []
    for path in paths:
        answers.append(httpx.post(f"{server.url}/v1/completions", json={"model": path, "prompt": "x", "max_tokens": 1}))
        assert answers[-1].status_code == 404 and answers[-1].json()["error"]["code"] == "model_not_found"
        for body in ({"prompt": path, "max_tokens": 2}, {"prompt": [path, path], "max_tokens": 1}):
            answers.append(httpx.post(f"{server.url}/v1/completions", json=body, timeout=30))
            assert answers[-1].status_code == 200
        messages = [{"role": "system", "content": path}, {"role": "user", "content": f"{{% include '{path}' %}}"}]
        answers.append(httpx.post(f"{server.url}/v1/chat/completions", json={"messages": messages, "max_tokens": 2}))
        assert answers[-1].status_code == 200
        tokens = httpx.post(f"{server.url}/tokenize", json={"messages": messages}).json()["tokens"]
        text = httpx.post(f"{server.url}/detokenize", json={"tokens": tokens}).json()["prompt"]
        assert path in text and f"{{% include '{path}' %}}" in text  # taken as text, never as a file or template
        answers.append(httpx.post(f"{server.url}/tokenize", json={"model": path, "prompt": "x"}))
        assert answers[-1].status_code == 404
    touched = [p for p in opened_files if "secret" in p or "passwd" in p or str(tiny_model.hf_dir) in p]
    assert not touched, touched
    secret.read_text()
    assert str(secret) in opened_files  # the hook does see opens
    assert not any("TOP-SECRET-CANARY" in a.text or "root:" in a.text for a in answers)
