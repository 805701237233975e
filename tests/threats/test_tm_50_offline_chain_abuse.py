# Would fail if: the broker stopped verifying an offline chain's blocks by the shared rules
# (a widening block signed by the holder's own key passing), admitted an offline leaf on
# routes where a registered holder acts (renew, delegate), or recorded a late report it
# cannot verify, from a reporter outside the chain, or twice.
"""TM-50 — offline chain abuse at the broker: a holder signs a block that widens what it
holds (more scope, a later ``exp``), a chain is presented without its holder's key, an
offline leaf is used to renew or delegate as if it were registered, and late audit reports
are forged, sent by a stranger, or replayed to flood the log.

Chains are verified by ``rules.chainverify`` with the broker's keys, limits and revocation
index (the same rules every verifier runs); a chain is presented as ``DPoP`` with its last
delegate's proof; an offline leaf is accepted only where validation happens and on the
report route; a report is audited once per key, and what cannot be verified is refused
with a ``denial_id``.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from e2e_support import Agent, RunningBroker
from threat_support import audit_events, bearer, denial_event, dpop_proof, refused

from tasklease.rules import attenuation, jws
from tasklease.rules.chainverify import derive

pytestmark = pytest.mark.slow

SCOPE = ["read:tickets:*"]
RS = "https://svc.example/tickets"


def _key(agent: Agent) -> nacl.signing.SigningKey:
    seed = agent.key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return nacl.signing.SigningKey(seed)


def _derive(agent: Agent, **extra: Any) -> tuple[str, nacl.signing.SigningKey, str]:
    """A block handing ``agent``'s token to a helper offline: chain, helper key and id."""
    helper = nacl.signing.SigningKey.generate()
    helper_id = f"{agent.agent_id}/helper-{secrets.token_hex(3)}"
    chain = derive(
        agent.access_token,
        _key(agent),
        delegate=helper_id,
        delegate_key=bytes(helper.verify_key),
        now=int(time.time()),
        ttl=120,
        **extra,
    )
    return chain, helper, helper_id


def _forged(agent: Agent, *, scope: list[str], exp: int) -> tuple[str, nacl.signing.SigningKey]:
    """A block that widens, signed by the holder's own (right) key."""
    helper = nacl.signing.SigningKey.generate()
    payload = attenuation.block_payload(
        sub=f"{agent.agent_id}/forged",
        key=bytes(helper.verify_key),
        exp=exp,
        iat=int(time.time()),
        jti=secrets.token_hex(16),
        depth=1,
        scope=tuple(scope),
    )
    return attenuation.append_block(agent.access_token, payload, _key(agent)), helper


def _valid_at_broker(broker: RunningBroker, chain: str, key: nacl.signing.SigningKey) -> bool:
    answer = broker.post(
        "/v1/token/validate",
        json={
            "token": chain,
            "dpop": dpop_proof(key, "GET", RS, token=chain),
            "htm": "GET",
            "htu": RS,
        },
    )
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["valid"])


def _as_holder(broker: RunningBroker, chain: str, key: nacl.signing.SigningKey, path: str) -> Any:
    url = broker.url + path
    return {"Authorization": f"DPoP {chain}", "DPoP": dpop_proof(key, "POST", url, token=chain)}


def _as_agent(broker: RunningBroker, agent: Any) -> dict[str, str]:
    """``agent``'s own token at the report route (bound to its key: a proof each time)."""
    return agent.auth("POST", broker.url + "/v1/audit/offline")  # type: ignore[no-any-return]


def _report(broker: RunningBroker, headers: dict[str, str], *chains: str) -> Any:
    return broker.post(
        "/v1/audit/offline",
        json={"derivations": [{"chain": c} for c in chains]},
        headers=headers,
    )


def test_a_widening_block_signed_by_the_holder_is_worth_nothing(broker: RunningBroker) -> None:
    agent = broker.register(SCOPE, dpop=True)
    exp = json.loads(jws.b64url_decode(agent.access_token.split(".")[1]))["exp"]
    wider, key = _forged(agent, scope=["read:tickets:*", "write:tickets:*"], exp=exp)
    later, later_key = _forged(agent, scope=SCOPE, exp=exp + 600)
    assert not _valid_at_broker(broker, wider, key)
    assert not _valid_at_broker(broker, later, later_key)
    # Reported as if it had been derived: refused, each with its own audited denial.
    answer = _report(broker, _as_agent(broker, agent), wider, later)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == 0 and [r["error"] for r in body["refused"]] == [
        "invalid_request",
        "invalid_request",
    ]
    denials = audit_events(broker, event_type="offline_report_denied")
    for refusal in body["refused"]:
        hits = [e for e in denials if e["detail"].endswith(f"denial={refusal['denial_id']}")]
        assert len(hits) == 1 and "chain rejected" in hits[0]["detail"], hits
    mine = audit_events(broker, event_type="offline_derivation_reported", agent_id=agent.agent_id)
    assert mine == []


def test_a_chain_without_its_holders_key_is_refused(broker: RunningBroker) -> None:
    agent = broker.register(SCOPE, dpop=True)
    chain, key, _ = _derive(agent)
    thief = nacl.signing.SigningKey.generate()
    assert _valid_at_broker(broker, chain, key)
    assert not _valid_at_broker(broker, chain, thief)
    # As a bearer token, or with the thief's proof, at a route that takes chains.
    refused(broker, _report(broker, bearer(chain), chain), 401, "unauthorized")
    stolen = _as_holder(broker, chain, thief, "/v1/audit/offline")
    refused(broker, _report(broker, stolen, chain), 401, "unauthorized", "offline chain")


def test_an_offline_leaf_cannot_renew_or_delegate(broker: RunningBroker) -> None:
    agent, other = broker.register(SCOPE, dpop=True), broker.register(SCOPE, dpop=True)
    chain, key, _ = _derive(agent)
    renew = broker.post(
        "/v1/token/renew", headers=_as_holder(broker, chain, key, "/v1/token/renew")
    )
    refused(broker, renew, 403, "insufficient_scope", "offline chain not accepted")
    delegate = broker.post(
        "/v1/delegate",
        json={"delegate_to": other.agent_id, "scope": ["read:tickets:1"]},
        headers=_as_holder(broker, chain, key, "/v1/delegate"),
    )
    refused(broker, delegate, 403, "insufficient_scope", "offline chain not accepted")
    # Where it is accepted (its own report), with its proof.
    report = _report(broker, _as_holder(broker, chain, key, "/v1/audit/offline"), chain)
    assert report.status_code == 200 and report.json()["accepted"] == 1, report.text


def test_late_reports_are_not_recorded_twice_nor_from_a_stranger(broker: RunningBroker) -> None:
    agent, stranger = broker.register(SCOPE, dpop=True), broker.register(SCOPE, dpop=True)
    chain, _, helper_id = _derive(agent)
    first = _report(broker, _as_agent(broker, agent), chain)
    assert first.json() == {"accepted": 1, "duplicates": 0, "refused": []}
    for _ in range(3):  # replayed
        again = _report(broker, _as_agent(broker, agent), chain)
        assert again.json() == {"accepted": 0, "duplicates": 1, "refused": []}
    by_stranger = _report(broker, _as_agent(broker, stranger), chain).json()
    assert [r["error"] for r in by_stranger["refused"]] == ["forbidden"]
    events = audit_events(broker, event_type="offline_derivation_reported", agent_id=helper_id)
    assert len(events) == 1 and events[0]["detail"].startswith("reported late | occurred_at=")
    # An admin token reports nothing: not an agent of any chain, not a resource server.
    admin = _report(broker, broker.admin_headers(), chain)
    event = refused(broker, admin, 403, "insufficient_scope")
    assert event["event_type"] == "scope_violation"
    assert denial_event(broker, admin)["outcome"] == "denied"


def test_a_chain_of_another_tenant_is_worth_nothing_here(broker: RunningBroker) -> None:
    acme = broker.create_tenant(f"acme-{secrets.token_hex(3)}")
    agent = acme.register(SCOPE, dpop=True)
    chain, key, helper_id = _derive(agent)
    assert _valid_at_broker(acme, chain, key)
    assert not _valid_at_broker(broker, chain, key)  # the default tenant's keys and issuer
    # Reported to the default tenant by one of its own agents: refused, nothing recorded.
    local = broker.register(SCOPE, dpop=True)
    body = _report(broker, _as_agent(broker, local), chain).json()
    assert body["accepted"] == 0 and [r["error"] for r in body["refused"]] == ["invalid_request"]
    assert audit_events(broker, event_type="offline_derivation_reported", agent_id=helper_id) == []
    # Its own tenant records it, in its own log.
    mine = _report(acme, _as_agent(acme, agent), chain).json()
    assert mine["accepted"] == 1
    assert (
        len(audit_events(acme, event_type="offline_derivation_reported", agent_id=helper_id)) == 1
    )
