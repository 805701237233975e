# Would fail if: a launch token bound to an agent's key (agent_key) admitted another key,
# spent a use on a thief's attempt, or the app SDK left the tokens it makes unbound.
"""Launch tokens bound to their agent's key over HTTP (TM-02), as an orchestrator, a thief
and the app SDK use them."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import SHARED_ENV, RunningBroker, assert_problem
from nacl.signing import SigningKey

from tasklease.client import AppClient, InvalidRequest


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_a_bound_launch_token_admits_only_its_agents_key(broker: RunningBroker) -> None:
    genuine = Ed25519PrivateKey.generate()
    lt = broker.launch_token(
        ["read:data:*"], agent_key=base64.b64encode(_raw(genuine)).decode("ascii")
    )
    listed = broker.get("/v1/admin/launch-tokens", headers=broker.admin_headers()).json()
    [view] = [t for t in listed["launch_tokens"] if t["agent_key"]]
    assert base64.urlsafe_b64decode(view["agent_key"] + "=") == _raw(genuine)
    # Someone who copied the token, with a key of its own: 401, audited, nothing spent.
    body, _ = broker.register_body(lt, ["read:data:*"])
    refused = broker.post("/v1/register", json=body)
    problem = assert_problem(refused, 401, "unauthorized")
    assert "bound to another agent key" in problem["detail"] and problem["denial_id"]
    body, _ = broker.register_body(lt, ["read:data:*"], key=genuine)
    assert broker.post("/v1/register", json=body).status_code == 200
    # The single-use token is now spent for everyone.
    again, _ = broker.register_body(lt, ["read:data:*"], key=genuine)
    assert_problem(broker.post("/v1/register", json=again), 401, "unauthorized")


def test_a_malformed_agent_key_is_a_bad_request(broker: RunningBroker) -> None:
    resp = broker.post(
        "/v1/admin/launch-tokens",
        json={"agent_name": "x", "allowed_scope": ["read:data:*"], "agent_key": "AAAA"},
        headers=broker.admin_headers(),
    )
    problem = assert_problem(resp, 400, "invalid_request")
    assert "agent_key" in problem["detail"]


def test_the_app_sdk_binds_each_agents_launch_token_to_its_key(broker: RunningBroker) -> None:
    app = broker.create_app(["read:data:*"], name="sdk-binding")
    key = SigningKey.generate()
    with (
        AppClient(broker.url, app["client_id"], app["client_secret"]) as sdk,
        sdk.create_agent("orch", "task-bound", ["read:data:1"], key=key) as agent,
    ):
        assert agent.token
    events = broker.get(
        "/v1/audit/events",
        params={"event_type": "launch_token_issued", "limit": "1000"},
        headers=broker.admin_headers(),
    ).json()["events"]
    [issued] = [e for e in events if f"app_id={app['app_id']}" in e["detail"]]
    bound = base64.urlsafe_b64encode(bytes(key.verify_key)).decode().rstrip("=")
    assert f"agent_key={bound}" in issued["detail"]


def test_a_broker_that_requires_bound_launch_tokens_makes_no_other(
    start_broker: Callable[..., RunningBroker],
) -> None:
    """``TASKLEASE_LAUNCH_TOKEN_BINDING=required`` (decision 254): a launch token without
    ``agent_key`` is refused 400 with a ``denial_id``, for the admin as for an app; one
    naming its agent's key is made, and the app SDK's agents register as before."""
    broker = start_broker(env={**SHARED_ENV, "TASKLEASE_LAUNCH_TOKEN_BINDING": "required"})
    unbound = {"agent_name": "x", "allowed_scope": ["read:data:*"]}
    refused = broker.post("/v1/admin/launch-tokens", json=unbound, headers=broker.admin_headers())
    problem = assert_problem(refused, 400, "invalid_request")
    assert problem["detail"].startswith("agent_key is required") and problem["denial_id"]
    genuine = Ed25519PrivateKey.generate()
    lt = broker.launch_token(
        ["read:data:*"], agent_key=base64.b64encode(_raw(genuine)).decode("ascii")
    )
    body, _ = broker.register_body(lt, ["read:data:*"], key=genuine)
    assert broker.post("/v1/register", json=body).status_code == 200
    app = broker.create_app(["read:data:*"], name="sdk-required")
    with AppClient(broker.url, app["client_id"], app["client_secret"]) as sdk:
        with sdk.create_agent("orch", "task-required", ["read:data:1"]) as agent:
            assert agent.token
        with pytest.raises(InvalidRequest):
            sdk.create_launch_token("x", ["read:data:1"])
