"""Schema fuzzing: schemathesis generates requests, valid and invalid, from lucid's own /openapi.json, and checks that
no answer is a 5xx, every status is documented, and every answer matches its documented schema.

Hypothesis drives each operation directly (schemathesis' pytest plugin does not run under this pytest): a fixed
seed, EXAMPLES cases per operation drawn from both of schemathesis' generation modes. An operation without inputs
(GET /v1/models, /health, /metrics) has a single distinct request, which hypothesis sends once.
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from test_server_support import TINY_MAX_MODEL_LEN, ServerProcess, shared_server, tiny_server_args

pytestmark = pytest.mark.timeout(300)

SEED = 20240517
EXAMPLES = 200
FUZZ_MAX_TOKENS = 2  # valid budgets are clipped to this, so the run stays fast on a CPU
GENERATING = ("/v1/chat/completions", "/v1/completions", "/glassbox/fork")
OPERATIONS = [("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/v1/models"),
              ("POST", "/tokenize"), ("POST", "/detokenize"), ("GET", "/health"), ("GET", "/metrics"),
              ("POST", "/glassbox/token"), ("POST", "/glassbox/fork"), ("GET", "/glassbox/engine")]
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_server(tiny_model) -> ServerProcess:
    return shared_server(*tiny_server_args(tiny_model))


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerProcess):  # noqa: ANN201 - schemathesis' schema object
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", config=SchemathesisConfig(seed=SEED))


def test_every_operation_is_fuzzed(api_schema):
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


def keep_generation_short(case) -> None:  # noqa: ANN001 - schemathesis.Case
    """Clip valid token budgets to FUZZ_MAX_TOKENS (out-of-range ones stay, to be refused); fill in omitted ones."""
    body = case.body
    if case.operation.path not in GENERATING or not isinstance(body, dict):
        return
    for key in ("max_tokens", "max_completion_tokens", "min_tokens"):
        value = body.get(key)
        if type(value) is int and FUZZ_MAX_TOKENS < value <= TINY_MAX_MODEL_LEN:
            body[key] = FUZZ_MAX_TOKENS
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = FUZZ_MAX_TOKENS


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_openapi_conformance(api_schema, fuzz_server, method, path):
    operation = api_schema[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    statuses: dict[int, int] = {}

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def fuzz(case) -> None:  # noqa: ANN001
        keep_generation_short(case)
        response = case.call_and_validate(base_url=fuzz_server.url, checks=CHECKS, timeout=60)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    started = time.perf_counter()
    fuzz()
    print(f"\n{method} {path}: {sum(statuses.values())} requests in {time.perf_counter() - started:.1f} s, "
          f"statuses {dict(sorted(statuses.items()))}")
    assert fuzz_server.health_status() == 200
