"""Schemathesis against a real broker (``tasklease serve`` over loopback HTTP), driven by
the broker's own ``/v1/openapi.json``: every operation, with data that fits the declared
request shapes and data that does not, each authenticated as the route requires (the
admin's token, an app's, an agent's). Every answer must be a declared status, never a
5xx, and its body must match the declared response schema.

Then arbitrary JSON (any shape, any nesting within the edge's limits) to every POST
route: never a 5xx, always a declared status.

The number of examples per operation is bounded (``FUZZ_EXAMPLES``) so the run stays
within CI's budget; more examples: ``TASKLEASE_FUZZ_EXAMPLES=500 pytest tests/fuzz``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from e2e_support import RunningBroker, launch_broker, stop_broker
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tasklease.http.openapi import openapi_document

pytestmark = pytest.mark.slow

FUZZ_EXAMPLES = int(os.environ.get("TASKLEASE_FUZZ_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SCOPE = ["read:data:*"]
# Generous authentication limits: the fuzzer calls the auth routes too, and the test
# needs its own tokens again when a fuzzed revocation ended them.
ENV = {"TASKLEASE_ADMIN_AUTH_BURST": "100000", "TASKLEASE_APP_AUTH_BURST": "100000"}
# A server-sent event stream stays open: it is read for half a second. Its events are
# not checked against the declared schema: the document declares the stream's body as a
# string (with the events' schemas in x-events), while OpenAPI 3.1 tooling (schemathesis
# among it) reads the schema of text/event-stream as that of each event.
STREAMS = {"/v1/revocations/stream"}


@dataclass
class Credentials:
    """Tokens the fuzzed requests present; renewed when a fuzzed call ended one."""

    broker: RunningBroker
    app: dict[str, Any]
    admin: str = ""
    app_token: str = ""
    agent: str = ""

    def refresh_admin(self) -> None:
        self.broker._admin_token = None
        self.admin = self.broker.admin_token()

    def refresh_app(self) -> None:
        self.app_token = self.broker.app_token(self.app)

    def fresh_agent(self) -> str:
        if not self.agent or not self.broker.is_valid(self.agent):
            self.agent = self.broker.register(SCOPE, bearer=self.admin).access_token
        return self.agent

    def for_route(self, path: str) -> str | None:
        """The bearer token a route wants: by the route's family."""
        if path.startswith(("/v1/admin/", "/v1/audit/")) and path != "/v1/admin/auth":
            return self.admin
        if path in ("/v1/revoke", "/v1/revocations", "/v1/revocations/stream", "/v1/introspect"):
            return self.admin
        if path.startswith("/v1/app/") and path != "/v1/app/auth":
            return self.app_token
        if path.startswith(("/v1/token/", "/v1/mutual/", "/v1/discovery/")) or path in (
            "/v1/delegate",
            "/v1/heartbeat",
        ):
            return None if path == "/v1/token/validate" else self.fresh_agent()
        return None


@pytest.fixture(scope="module")
def fuzz_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    running = launch_broker(tmp_path_factory.mktemp("fuzz") / "data", ENV)
    yield running
    stop_broker(running)


@pytest.fixture(scope="module")
def credentials(fuzz_broker: RunningBroker) -> Credentials:
    creds = Credentials(fuzz_broker, fuzz_broker.create_app(["read:data:*"]))
    creds.refresh_admin()
    creds.refresh_app()
    return creds


# The document the broker serves (test_the_served_document_is_the_one_fuzzed holds the
# two equal), loaded at collection so that every operation is a test of its own.
schema = schemathesis.openapi.from_dict(openapi_document())
schema.config.generation.update(max_examples=FUZZ_EXAMPLES)


def test_the_served_document_is_the_one_fuzzed(fuzz_broker: RunningBroker) -> None:
    assert fuzz_broker.get("/v1/openapi.json").json() == openapi_document()


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_declared(
    case: Any, fuzz_broker: RunningBroker, credentials: Credentials
) -> None:
    token = credentials.for_route(case.path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if case.path in STREAMS:
        response = case.call(base_url=fuzz_broker.url, headers=headers, timeout=(5, 0.5))
        checks = [check for check in CHECKS if check is not response_schema_conformance]
    else:
        response = case.call(base_url=fuzz_broker.url, headers=headers, timeout=15)
        checks = CHECKS
    case.validate_response(response, checks=checks)
    if response.status_code == 401 and token == credentials.admin:
        credentials.refresh_admin()  # a fuzzed revocation may have ended it
    if response.status_code == 401 and token == credentials.app_token:
        credentials.refresh_app()


def _post_routes(broker: RunningBroker) -> list[str]:
    document = broker.get("/v1/openapi.json").json()
    return sorted(path for path, operations in document["paths"].items() if "post" in operations)


# Any JSON at all: the shapes the routes expect, and every other.
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
_any_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                ["token", "scope", "level", "target", "agent_id", "nonce", "signature", "secret"]
            )
            | st.text(max_size=12),
            inner,
            max_size=6,
        )
    ),
    max_leaves=30,
)


def test_arbitrary_json_to_every_post_route_is_never_a_server_error(
    fuzz_broker: RunningBroker, credentials: Credentials
) -> None:
    document = fuzz_broker.get("/v1/openapi.json").json()
    routes = [path for path in _post_routes(fuzz_broker) if "{" not in path]
    assert "/v1/register" in routes and "/v1/token/validate" in routes
    failures: list[str] = []

    @settings(
        max_examples=FUZZ_EXAMPLES * 4,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(route=st.sampled_from(routes), body=_any_json, raw=st.booleans())
    # Found by this test: a control character in the body of a route that reads none is
    # refused at the edge (400), which the document did not declare for such routes.
    @example(route="/v1/admin/keys/rotate", body={"note": "\x01"}, raw=False)
    @example(route="/v1/token/renew", body=["\x7f"], raw=True)
    @example(route="/v1/token/release", body={"\x85": None}, raw=False)
    def post(route: str, body: Any, raw: bool) -> None:
        token = credentials.for_route(route)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # raw: the JSON text with its keys as given (duplicates and all), else compact.
        content = json.dumps(body) if raw else json.dumps(body, separators=(",", ":"))
        response = fuzz_broker.client.post(route, content=content, headers=headers)
        declared = document["paths"][route]["post"]["responses"]
        if response.status_code >= 500 or str(response.status_code) not in declared:
            failures.append(f"POST {route} {content[:200]!r} -> {response.status_code}")
        if response.status_code == 401 and token == credentials.admin:
            credentials.refresh_admin()

    post()
    assert not failures, "\n".join(failures[:20])


def test_the_broker_logged_no_unhandled_error(fuzz_broker: RunningBroker) -> None:
    """Last in the module: nothing the fuzzing sent made the broker log an error."""
    log = Path(fuzz_broker.log_path).read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert not re.search(r'"level":\s*"(error|critical)"', log), log[-4000:]
    with httpx.Client(base_url=fuzz_broker.url, timeout=10) as client:
        assert client.get("/v1/health").status_code == 200
