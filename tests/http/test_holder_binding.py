"""``TASKLEASE_HOLDER_BINDING=required`` on a real broker over loopback HTTP (decision 253):
an AgentWrit-style bearer registration is refused 400 with a ``denial_id`` that leads to
its audit event; the SDK's DPoP-bound agent registers with the same launch token, and its
renewed token keeps the binding."""

from __future__ import annotations

from collections.abc import Callable

from e2e_support import SHARED_ENV, RunningBroker, jwt_parts

from tasklease.client import Agent

SCOPE = ["read:data:*"]


def test_a_broker_that_requires_binding_admits_bound_agents_only(
    start_broker: Callable[..., RunningBroker],
) -> None:
    broker = start_broker(env={**SHARED_ENV, "TASKLEASE_HOLDER_BINDING": "required"})
    launch_token = broker.launch_token(SCOPE)
    body, _ = broker.register_body(launch_token, SCOPE)
    refused = broker.post("/v1/register", json=body)
    assert refused.status_code == 400, refused.text
    problem = refused.json()
    assert problem["error_code"] == "invalid_request"
    assert problem["detail"].startswith("holder binding required")
    denial = problem["denial_id"]
    events = broker.get(
        "/v1/audit/events",
        params={"event_type": "registration_failed", "limit": 100},
        headers=broker.admin_headers(),
    ).json()["events"]
    assert [e for e in events if f"denial={denial}" in e["detail"]]
    with Agent.register(broker.url, launch_token, "orch-1", "task-1", SCOPE, dpop=True) as agent:
        jkt = jwt_parts(agent.token)[1]["cnf"]["jkt"]
        agent.renew()
        assert jwt_parts(agent.token)[1]["cnf"] == {"jkt": jkt}
