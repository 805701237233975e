# Would fail if: the delegate route built `delegation_chain`, `act` or `principal` from
# the request body instead of from the delegator's verified token, or if edits to a
# token's chain were not caught by its signature.
"""TM-21 — delegation chain forgery: an agent claims authority that was never delegated
to it — a hop that did not happen, a delegator with more scope than it had, another
human principal, a chain trimmed to look like a root token, or a loop through itself.

The broker alone writes the chain: one broker-signed record per hop, built from the
delegator's verified token; the RFC 8693 ``act`` chain and the principal follow from it.
Anything a caller sends for them is ignored; any edit of them in a token breaks its
signature; loops and chains past ``max_delegation_depth`` are refused and audited.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import RunningBroker, jwt_parts
from threat_support import bearer, compact, refused

pytestmark = pytest.mark.slow

BROKER_ENV = {"TASKLEASE_MAX_DELEGATION_DEPTH": "2"}
SCOPE = ["read:tickets:*"]
PRINCIPAL = "user:alice@example.com"


def _hop(broker: RunningBroker, token: str, to: Any, **extra: Any) -> str:
    resp = broker.delegate(token, to.agent_id, ["read:tickets:1"], **extra)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def _with_payload(token: str, payload: dict[str, Any]) -> str:
    header = jwt_parts(token)[0]
    unsigned = compact(header, payload, None)
    return unsigned + token.rsplit(".", 1)[1]


def test_the_chain_is_the_brokers_whatever_the_caller_sends(broker: RunningBroker) -> None:
    root = broker.register(SCOPE, launch_token=broker.launch_token(SCOPE, principal=PRINCIPAL))
    helper = broker.register(SCOPE)
    invented = {
        "agent": "spiffe://tasklease.local/agent/orch-ops/task-root/0000000000000000",
        "scope": ["admin:revoke:*"],
        "delegated_at": "2020-01-01T00:00:00Z",
        "signature": "00" * 64,
    }
    token = _hop(
        broker,
        root.access_token,
        helper,
        delegation_chain=[invented],
        act={"sub": "user:mallory@example.com"},
        principal="user:mallory@example.com",
        sub="spiffe://tasklease.local/agent/orch-ops/task-root/0000000000000000",
        chain_hash="00" * 32,
    )
    claims = jwt_parts(token)[1]
    # RFC 8693 section 4.1: the root delegator is the subject, the helper the actor.
    assert claims["sub"] == root.agent_id
    assert [r["agent"] for r in claims["delegation_chain"]] == [root.agent_id]
    assert claims["delegation_chain"][0]["scope"] == SCOPE
    assert claims["principal"] == PRINCIPAL
    assert claims["act"] == {"sub": helper.agent_id}
    assert broker.is_valid(token)


def test_an_edited_chain_is_a_broken_token(broker: RunningBroker) -> None:
    root = broker.register(SCOPE, launch_token=broker.launch_token(SCOPE, principal=PRINCIPAL))
    helper = broker.register(SCOPE)
    token = _hop(broker, root.access_token, helper)
    claims = jwt_parts(token)[1]
    record = claims["delegation_chain"][0]
    edits = [
        # Look like a root token of the delegate's own.
        {
            **{k: v for k, v in claims.items() if k not in ("delegation_chain", "chain_hash")},
            "sub": helper.agent_id,
            "act": None,
        },
        # Claim the delegator held operator authority.
        {**claims, "delegation_chain": [{**record, "scope": ["admin:revoke:*"]}]},
        # Claim another delegator, or another human.
        {**claims, "delegation_chain": [{**record, "agent": helper.agent_id}]},
        {**claims, "principal": "user:mallory@example.com"},
    ]
    for payload in edits:
        forged = _with_payload(token, payload)
        resp = broker.post("/v1/token/renew", headers=bearer(forged))
        refused(broker, resp, 401, "unauthorized", "bad signature")
        assert not broker.is_valid(forged)
        onward = broker.delegate(forged, root.agent_id, ["read:tickets:1"])
        refused(broker, onward, 401, "unauthorized")
    assert broker.is_valid(token)


def test_loops_are_refused(broker: RunningBroker) -> None:
    first, second = broker.register(SCOPE), broker.register(SCOPE)
    resp = broker.delegate(first.access_token, first.agent_id, ["read:tickets:1"])
    refused(broker, resp, 403, "scope_violation", "cycle")
    back = _hop(broker, first.access_token, second)
    resp = broker.delegate(back, first.agent_id, ["read:tickets:1"])
    refused(broker, resp, 403, "scope_violation", "cycle")


def test_the_depth_limit_holds(broker: RunningBroker) -> None:
    agents = [broker.register(SCOPE) for _ in range(4)]
    token = agents[0].access_token
    for nxt in agents[1:3]:
        token = _hop(broker, token, nxt)
    assert len(jwt_parts(token)[1]["delegation_chain"]) == 2
    resp = broker.delegate(token, agents[3].agent_id, ["read:tickets:1"])
    event = refused(broker, resp, 403, "scope_violation", "depth")
    assert event["event_type"] == "delegation_depth_exceeded"
