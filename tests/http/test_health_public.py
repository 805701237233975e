"""``/v1/health`` to anyone: alive and serving, in AgentWrit's shape, without the version,
uptime, counts or signing key id; those to an operator's token with ``admin:audit:*``."""

from __future__ import annotations

import json

import pytest
from e2e_support import RunningBroker, assert_problem

from tasklease.core.status import VERSION, public_health

AGENTWRIT_FIELDS = {"status", "version", "uptime", "db_connected", "audit_events_count"}


def test_anonymous_callers_learn_only_that_the_broker_serves(broker: RunningBroker) -> None:
    broker.register(["read:data:x"])  # some audit events and revocation state to hide
    answer = broker.get("/v1/health")
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == AGENTWRIT_FIELDS | {"revocations_current"}, body
    assert body == {
        "status": "ok",
        "version": "",
        "uptime": 0,
        "db_connected": True,
        "audit_events_count": 0,
        "revocations_current": True,
    }
    kid = broker.get("/.well-known/jwks.json").json()["keys"][0]["kid"]
    assert kid not in answer.text and VERSION not in answer.text


@pytest.mark.parametrize("who", ["admin secret", "auditor", "operator"])
def test_an_operators_token_gets_the_details(broker: RunningBroker, who: str) -> None:
    if who == "admin secret":
        headers = broker.admin_headers()
    else:
        headers = {"Authorization": f"Bearer {broker.operator_token(who)}"}
    body = broker.get("/v1/health", headers=headers).json()
    kid = broker.get("/.well-known/jwks.json").json()["keys"][0]["kid"]
    assert body["status"] == "ok"
    assert body["version"] == VERSION
    assert body["signing_kid"] == kid
    assert body["audit_events_count"] > 0
    assert isinstance(body["revocation_entries"], int)
    assert isinstance(body["uptime"], int)


def test_a_token_that_is_not_an_operators_is_refused(broker: RunningBroker) -> None:
    agent = broker.register(["read:data:x"])
    app_token = broker.app_token(broker.create_app(["read:data:*"]))
    for bearer in (agent.access_token, app_token):
        refused = broker.get("/v1/health", headers={"Authorization": f"Bearer {bearer}"})
        assert_problem(refused, 403, "insufficient_scope")
    garbage = broker.get("/v1/health", headers={"Authorization": "Bearer not-a-token"})
    assert_problem(garbage, 401, "unauthorized")


def test_the_public_view_keeps_why_the_broker_is_degraded() -> None:
    report = {
        "status": "degraded",
        "reason": "storage did not answer within 2s",
        "revocations_current": True,
        "version": VERSION,
        "uptime": 4242,
        "db_connected": False,
        "audit_events_count": 99,
        "revocation_entries": 7,
        "signing_kid": "kid-1",
    }
    public = public_health(report)
    assert public == {
        "status": "degraded",
        "version": "",
        "uptime": 0,
        "audit_events_count": 0,
        "reason": "storage did not answer within 2s",
        "db_connected": False,
        "revocations_current": True,
    }
    assert "kid-1" not in json.dumps(public)
