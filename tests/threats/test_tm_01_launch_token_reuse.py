# Would fail if: consuming a single-use launch token stopped requiring that it was not
# consumed yet (the store's `consumed_at IS NULL` condition), so one ticket registered twice.
"""TM-01 — launch-token reuse: a launch token seen once (a leaked log line, a copied
environment, a second process of the same orchestrator) is redeemed again.

A single-use launch token registers exactly one agent, also when the attempts race; every
later attempt is refused, audited under its ``denial_id``, and issues nothing.
"""

from __future__ import annotations

import threading

import httpx
import pytest
from e2e_support import RunningBroker
from threat_support import audit_events, refused

pytestmark = pytest.mark.slow

SCOPE = ["read:tickets:*"]


def test_a_consumed_launch_token_registers_nobody(broker: RunningBroker) -> None:
    launch = broker.launch_token(SCOPE)
    first = broker.register(SCOPE, launch_token=launch)
    assert broker.is_valid(first.access_token)

    # The thief arrives second with its own key and a fresh, correctly signed nonce.
    body, _ = broker.register_body(launch, SCOPE, orch_id="orch-thief")
    event = refused(broker, broker.post("/v1/register", json=body), 401, "unauthorized", "consumed")
    assert event["event_type"] == "registration_failed"
    assert launch not in event["detail"]
    # Nothing was issued: the only agent registered with this ticket is the first one.
    registered = [
        e
        for e in audit_events(broker, event_type="agent_registered")
        if "orch-thief" in e["agent_id"]
    ]
    assert registered == []


def test_racing_registrations_of_one_launch_token_yield_one_agent(
    broker: RunningBroker,
) -> None:
    launch = broker.launch_token(SCOPE)
    bodies = [broker.register_body(launch, SCOPE, orch_id=f"orch-race{i}")[0] for i in range(8)]
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(len(bodies))

    def attempt(body: dict[str, object]) -> None:
        with httpx.Client(base_url=broker.url, timeout=15) as client:
            start.wait()
            resp = client.post("/v1/register", json=body)
        with lock:
            answers.append(resp)

    threads = [threading.Thread(target=attempt, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [a for a in answers if a.status_code == 200]
    assert len(winners) == 1, [a.status_code for a in answers]
    for loser in answers:
        if loser.status_code != 200:
            refused(broker, loser, 401, "unauthorized", "consumed")


def test_a_multi_use_launch_token_is_an_explicit_choice(broker: RunningBroker) -> None:
    # The default is single use: leaving the field out must not make a reusable ticket.
    created = broker.post(
        "/v1/admin/launch-tokens",
        json={"agent_name": "default", "allowed_scope": SCOPE},
        headers=broker.admin_headers(),
    )
    assert created.status_code == 201, created.text
    assert created.json()["policy"]["single_use"] is True
    assert created.json()["expires_at"]
    launch = created.json()["launch_token"]
    broker.register(SCOPE, launch_token=launch)
    body, _ = broker.register_body(launch, SCOPE)
    refused(broker, broker.post("/v1/register", json=body), 401, "unauthorized", "consumed")
