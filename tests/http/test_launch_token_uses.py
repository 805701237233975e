"""Launch tokens over HTTP: uses left in the answer, strict input, resume switched off."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from e2e_support import RunningBroker, assert_problem, b64

SCOPE = ["read:data:uses"]


def create(broker: RunningBroker, **fields: Any) -> Any:
    return broker.post(
        "/v1/admin/launch-tokens",
        json={"agent_name": "uses", "allowed_scope": SCOPE, **fields},
        headers=broker.admin_headers(),
    )


def test_creation_answers_max_uses_and_uses_left(broker: RunningBroker) -> None:
    single = create(broker)
    assert single.status_code == 201, single.text
    body = single.json()
    assert (body["max_uses"], body["uses_left"]) == (1, 1)
    assert body["policy"]["single_use"] is True
    assert body["policy"]["allow_resume"] is True

    multi = create(broker, single_use=False).json()
    assert (multi["max_uses"], multi["uses_left"]) == (10, 10)

    counted = create(broker, single_use=False, max_uses=3, allow_resume=False).json()
    assert (counted["max_uses"], counted["uses_left"]) == (3, 3)
    assert counted["policy"]["allow_resume"] is False
    for _ in range(3):
        broker.register(SCOPE, launch_token=counted["launch_token"])
    body, _ = broker.register_body(counted["launch_token"], SCOPE)
    refused = assert_problem(broker.post("/v1/register", json=body), 401, "unauthorized")
    assert refused["detail"] == "launch token: launch token already consumed"
    assert refused["denial_id"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"ttl": -1}, "ttl"),
        ({"ttl": 0}, "ttl"),
        ({"max_ttl": -300}, "max_ttl"),
        ({"max_ttl": 0}, "max_ttl"),
        ({"ttl": 1.5}, "ttl"),
        ({"max_ttl": "300"}, "max_ttl"),
        ({"single_use": False, "max_uses": 0}, "max_uses"),
        ({"single_use": False, "max_uses": -2}, "max_uses"),
        ({"single_use": False, "max_uses": "5"}, "max_uses"),
        ({"max_uses": 5}, "max_uses"),
        ({"allow_resume": "no"}, "allow_resume"),
    ],
)
def test_bad_lifetimes_and_uses_are_refused_naming_the_field(
    broker: RunningBroker, fields: dict[str, Any], named: str
) -> None:
    body = assert_problem(create(broker, **fields), 400, "invalid_request")
    assert named in body["detail"], body


def test_validity_above_the_ceiling_is_invalid_ttl(broker: RunningBroker) -> None:
    assert create(broker, ttl=3600).status_code == 201
    body = assert_problem(create(broker, ttl=3601), 400, "invalid_ttl")
    assert "at most 3600 seconds" in body["detail"]


def resume(broker: RunningBroker, agent: Any) -> Any:
    nonce = broker.nonce()
    return broker.post(
        "/v1/resume",
        json={
            "agent_id": agent.agent_id,
            "nonce": nonce,
            "signature": b64(agent.key.sign(bytes.fromhex(nonce))),
        },
    )


def test_resume_switched_off_is_403_with_a_denial_id(broker: RunningBroker) -> None:
    task = f"task-{secrets.token_hex(6)}"
    off = broker.register(SCOPE, task_id=task, allow_resume=False)
    answer = assert_problem(resume(broker, off), 403, "forbidden", instance="/v1/resume")
    denial_id = answer["denial_id"]
    assert denial_id.startswith("den_")
    events = broker.get(
        "/v1/audit/events",
        params={"event_type": "agent_resume_denied", "agent_id": off.agent_id},
        headers=broker.admin_headers(),
    ).json()["events"]
    assert [e["detail"].endswith(f"denial={denial_id}") for e in events] == [True]
    assert "allow_resume false" in events[0]["detail"]

    on = broker.register(SCOPE)  # allow_resume defaults to true
    resumed = resume(broker, on)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["agent_id"] == on.agent_id
