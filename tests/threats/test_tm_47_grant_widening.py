# Would fail if: a delegation or a narrowing could ask for more money, another payee, a
# later window, more calls or another action than its parent's grant holds, a location
# that reads as another place passed, or a refusal were not audited under its denial_id.
"""TM-47 — a grant widened along a lineage, attacked over HTTP (docs/grants.md)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from e2e_support import RunningBroker
from threat_support import bearer, refused

pytestmark = pytest.mark.slow

DAY = 86400
PAYEES = "https://pay.example/payees/"
# Every window is read from one time taken at import: the parameters below are made at
# collection and the parent's grant when its fixture runs, maybe past a midnight. A
# window is two days long, from an hour ago, so the parent's is still open then.
START = int(time.time()) - 3600
WINDOW = 2 * DAY


def payment(
    amount: str = "100", payee: str = "P", *, day: int = 0, calls: int = 2, action: str = "pay"
) -> dict[str, Any]:
    today = START + day * WINDOW
    return {
        "type": "resource_access",
        "actions": [action],
        "locations": [PAYEES + payee],
        "limits": {
            "max_amount": amount,
            "currency": "EUR",
            "not_before": today,
            "not_after": today + WINDOW,
            "allowed_values": {"payee": [payee]},
            "max_calls": calls,
        },
    }


def _register(broker: RunningBroker, launch: str) -> dict[str, Any]:
    body, _ = broker.register_body(launch, [])
    body.update(requested_scope=None, authorization_details=[payment("500", calls=5)])
    answer = broker.post("/v1/register", json=body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.fixture(scope="module")
def pair(broker: RunningBroker) -> tuple[dict[str, Any], dict[str, Any]]:
    created = broker.post(
        "/v1/admin/launch-tokens",
        headers=broker.admin_headers(),
        json={
            "agent_name": "payer",
            "authorization_details": [payment("500", calls=5)],
            "single_use": False,
            "max_uses": 2,
            "ttl": 600,
        },
    )
    assert created.status_code == 201, created.text
    launch = created.json()["launch_token"]
    return _register(broker, launch), _register(broker, launch)


@pytest.mark.parametrize(
    "wider",
    [
        payment("600"),
        payment("100", "Q"),
        payment("100", day=1),
        payment("100", calls=6),
        payment("100", action="refund"),
        {**payment("100"), "locations": [PAYEES + "P/../Q"]},
        {**payment("100"), "locations": [PAYEES + "P%2FQ"]},
    ],
    ids=[
        "more-money",
        "other-payee",
        "tomorrow",
        "more-calls",
        "other-action",
        "dot-segment",
        "encoded-slash",
    ],
)
def test_a_delegation_never_widens_a_grant(
    broker: RunningBroker, pair: tuple[dict[str, Any], dict[str, Any]], wider: dict[str, Any]
) -> None:
    payer, helper = pair
    resp = broker.post(
        "/v1/delegate",
        headers=bearer(payer["access_token"]),
        json={"delegate_to": helper["agent_id"], "authorization_details": [wider]},
    )
    if resp.status_code == 400:
        # A location that could read as another place is malformed input, refused
        # before anything is decided.
        assert resp.json()["error_code"] == "invalid_authorization_details", resp.text
        assert "access_token" not in resp.json()
    else:
        refused(broker, resp, 403, resp.json()["error_code"])
    # Within the grant, the same delegation goes through.
    within = broker.post(
        "/v1/delegate",
        headers=bearer(payer["access_token"]),
        json={"delegate_to": helper["agent_id"], "authorization_details": [payment("100")]},
    )
    assert within.status_code == 200, within.text
