"""The published AgentWrit Python SDK (``agentwrit==0.3.0``), unchanged, against tasklease."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import agentwrit
import httpx
import pytest
from agentwrit import AgentWritApp
from agentwrit.errors import (
    AuthenticationError,
    AuthorizationError,
    ProblemResponseError,
    RateLimitError,
)
from e2e_support import RunningBroker, jwt_parts

SCOPES = ["read:data:*", "write:reports:*"]


@pytest.fixture
def sdk_app(broker: RunningBroker) -> Iterator[AgentWritApp]:
    created = broker.create_app(SCOPES)
    app = AgentWritApp(broker.url, created["client_id"], created["client_secret"])
    yield app
    app.close()


def test_sdk_full_flow(broker: RunningBroker, sdk_app: AgentWritApp) -> None:
    a = sdk_app.create_agent("orch-sdk", "task-a", ["read:data:*", "write:reports:q3"])
    b = sdk_app.create_agent("orch-sdk", "task-b", ["read:data:customers"])
    c = sdk_app.create_agent("orch-sdk", "task-c", ["read:data:customers"], label="agent-c")
    assert a.agent_id.startswith("spiffe://")
    assert len({a.agent_id, b.agent_id, c.agent_id}) == 3
    assert a.expires_in == 300

    result = sdk_app.validate(a.access_token)
    assert result.valid is True
    assert result.claims is not None
    assert result.claims.sub == a.agent_id
    assert result.claims.scope == ["read:data:*", "write:reports:q3"]
    assert result.claims.task_id == "task-a"
    assert result.claims.orch_id == "orch-sdk"
    assert result.claims.aud == ["tasklease"]

    old = a.access_token
    a.renew()
    assert a.access_token != old
    assert a.agent_id == result.claims.sub
    assert not agentwrit.validate(broker.url, old).valid
    assert agentwrit.validate(broker.url, a.access_token).valid

    delegated = a.delegate(b.agent_id, ["read:data:customers"])
    assert delegated.expires_in == 60
    assert [r.agent for r in delegated.delegation_chain] == [a.agent_id]

    # A raw delegation onwards with the delegated token as bearer (AgentWrit story 7).
    resp = httpx.post(
        f"{broker.url}/v1/delegate",
        json={"delegate_to": c.agent_id, "scope": ["read:data:customers"]},
        headers={"Authorization": f"Bearer {delegated.access_token}"},
    )
    assert resp.status_code == 200, resp.text
    onward = resp.json()
    chain = onward["delegation_chain"]
    assert len(chain) == 2
    assert [r["agent"] for r in chain] == [a.agent_id, b.agent_id]
    checked = agentwrit.validate(broker.url, onward["access_token"])
    assert checked.valid is True
    assert checked.claims is not None
    assert checked.claims.sub == c.agent_id
    assert checked.claims.delegation_chain is not None
    assert [r.agent for r in checked.claims.delegation_chain] == [a.agent_id, b.agent_id]
    assert checked.claims.chain_hash == jwt_parts(onward["access_token"])[1]["chain_hash"]

    # Widening is refused and surfaces as the SDK's AuthorizationError (HTTP 403).
    with pytest.raises(AuthorizationError) as excinfo:
        a.delegate(b.agent_id, ["write:reports:*"])
    assert excinfo.value.status_code == 403
    assert excinfo.value.problem.error_code == "scope_violation"
    assert excinfo.value.problem.instance == "/v1/delegate"
    assert excinfo.value.problem.request_id

    current = a.access_token
    a.release()
    assert not agentwrit.validate(broker.url, current).valid
    a.release()  # idempotent in the SDK: no second request


def test_sdk_scope_above_ceiling(sdk_app: AgentWritApp) -> None:
    with pytest.raises(AuthorizationError) as excinfo:
        sdk_app.create_agent("orch-sdk", "task-x", ["delete:data:*"])
    assert excinfo.value.problem.error_code == "forbidden"


def test_sdk_bad_credentials(broker: RunningBroker) -> None:
    app = AgentWritApp(broker.url, "nope-000000000000", "0" * 64)
    try:
        with pytest.raises(AuthenticationError) as excinfo:
            app.create_agent("o", "t", ["read:data:x"])
        assert excinfo.value.status_code == 401
        assert isinstance(excinfo.value, ProblemResponseError)
    finally:
        app.close()


def test_sdk_health(sdk_app: AgentWritApp) -> None:
    health = sdk_app.health()
    assert health.status == "ok"
    assert isinstance(health.version, str)
    assert health.db_connected is True
    assert health.audit_events_count >= 0
    assert health.uptime >= 0


def test_sdk_validate_garbage(broker: RunningBroker) -> None:
    result = agentwrit.validate(broker.url, "not-a-token")
    assert result.valid is False
    assert result.error == "token is invalid or expired"


def test_sdk_longest_ids_make_a_launch_token(broker: RunningBroker, sdk_app: AgentWritApp) -> None:
    """The SDK names its launch token ``f"{orch_id}/{task_id}"`` when no label is given:
    with both ids as long as a SPIFFE segment may be here (128 characters), that name is
    257 characters, and the launch token must still be made."""
    orch, task = "o" * 128, "t" * 128
    agent = sdk_app.create_agent(orch, task, ["read:data:x"])
    assert agent.agent_id.startswith(f"spiffe://tasklease.local/agent/{orch}/{task}/")
    result = sdk_app.validate(agent.access_token)
    assert result.valid is True
    assert result.claims is not None
    assert (result.claims.orch_id, result.claims.task_id) == (orch, task)
    # One character more than that label still refused: the bound stays.
    resp = broker.post(
        "/v1/admin/launch-tokens",
        json={"agent_name": "n" * 258, "allowed_scope": ["read:data:x"]},
        headers=broker.admin_headers(),
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "invalid_request"


def test_sdk_sign_in_limit_is_its_rate_limit_error(
    start_broker: Callable[..., RunningBroker],
) -> None:
    """A 429 from the app sign-in limit reaches the SDK as its ``RateLimitError`` (it maps
    by status), with the problem body it parses: ``rate_limited`` and a ``Retry-After``."""
    broker = start_broker(env={"TASKLEASE_APP_AUTH_BURST": "1", "TASKLEASE_APP_AUTH_RATE": "0.001"})
    created = broker.create_app(SCOPES)
    first = AgentWritApp(broker.url, created["client_id"], created["client_secret"])
    second = AgentWritApp(broker.url, created["client_id"], created["client_secret"])
    try:
        first.create_agent("orch-sdk", "task-limit", ["read:data:x"])
        with pytest.raises(RateLimitError) as excinfo:
            second.create_agent("orch-sdk", "task-limit", ["read:data:x"])
        assert excinfo.value.status_code == 429
        assert excinfo.value.problem.error_code == "rate_limited"
        assert excinfo.value.problem.instance == "/v1/app/auth"
        resp = broker.post(
            "/v1/app/auth",
            json={"client_id": created["client_id"], "client_secret": created["client_secret"]},
        )
        assert resp.status_code == 429
        assert int(resp.headers["retry-after"]) >= 1
    finally:
        first.close()
        second.close()
