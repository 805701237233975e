"""Counted calls (``max_calls``) on two real replicas of one PostgreSQL database: an
agent and the delegate it handed a narrower counted grant to count calls at once, each
through both replicas. Between them they never make more calls than the agent's grant
allows, the delegate never more than its own, and every refused count carries a
``denial_id`` that names exactly one audit event."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from e2e_support import RunningBroker

pytestmark = pytest.mark.slow

Replicas = Callable[..., list[RunningBroker]]
PAYEES = "https://pay.example/payees"


def _grant(calls: int, location: str = PAYEES) -> dict[str, Any]:
    return {
        "type": "resource_access",
        "actions": ["pay"],
        "locations": [location],
        "limits": {"max_calls": calls},
    }


def _register(broker: RunningBroker, launch: str, details: list[dict[str, Any]]) -> Any:
    body, _ = broker.register_body(launch, [])
    body.update(requested_scope=None, authorization_details=details)
    answer = broker.post("/v1/register", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_agent_and_its_delegate_share_one_budget_across_replicas(
    pg_url: str, replicas: Replicas
) -> None:
    a, b = replicas(pg_url)
    created = a.post(
        "/v1/admin/launch-tokens",
        headers=a.admin_headers(),
        json={
            "agent_name": "payer",
            "authorization_details": [_grant(30)],
            "single_use": False,
            "max_uses": 2,
            "ttl": 600,
        },
    )
    assert created.status_code == 201, created.text
    launch = created.json()["launch_token"]
    payer = _register(a, launch, [_grant(30)])
    helper = _register(b, launch, [_grant(30)])
    handed = b.post(
        "/v1/delegate",
        headers={"Authorization": f"Bearer {payer['access_token']}"},
        json={
            "delegate_to": helper["agent_id"],
            "authorization_details": [_grant(25, f"{PAYEES}/P")],
        },
    )
    assert handed.status_code == 200, handed.text
    tokens = {
        "payer": (payer["access_token"], PAYEES),
        "delegate": (handed.json()["access_token"], f"{PAYEES}/P"),
    }

    def count(i: int) -> tuple[str, int, dict[str, Any]]:
        who = "delegate" if i % 3 == 0 else "payer"
        token, location = tokens[who]
        replica = (a, b)[i % 2]
        with httpx.Client(base_url=replica.url, timeout=30) as client:
            answer = client.post(
                "/v1/token/calls",
                json={
                    "token": token,
                    "type": "resource_access",
                    "action": "pay",
                    "location": location,
                },
            )
        return who, answer.status_code, answer.json()

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(count, range(90)))
    served = Counter(who for who, status, _ in answers if status == 200)
    assert sum(served.values()) == 30  # the agent's grant: 30 calls between them
    assert served["delegate"] <= 25
    refused = [body for _, status, body in answers if status != 200]
    assert all(body["status"] == 403 for body in refused)
    events = a.get("/v1/audit/events?limit=1000", headers=a.admin_headers()).json()["events"]
    kinds = Counter(e["event_type"] for e in events)
    assert kinds["grant_call_counted"] == 30
    assert kinds["grant_calls_exhausted"] == len(refused) == 60
    texts = [json.dumps(e) for e in events]
    for body in refused:
        assert sum(body["denial_id"] in text for text in texts) == 1
