"""What puts a registered agent out of standing, each on its own (``Kernel.standing``):
an agent that declared itself done (its session is over, though no revocation entry names
it) and an agent whose stored attestation cannot be read (never taken for an
unattested one). An agent out of standing is handed nothing."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from tasklease.core.errors import Forbidden, NotFound
from tasklease.core.store import AuditQuery
from tasklease.rules.messages import heartbeat_signing_input


def _denial_detail(broker: Any, denial_id: str | None) -> str:
    assert denial_id
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    (event,) = [e for e in events if f"denial={denial_id}" in e.detail]
    return str(event.detail)


def test_an_agent_that_declared_itself_done_is_out_of_standing(broker: Any, kit: Any) -> None:
    agent = kit.register(broker)
    delegator = kit.register(broker, task_id="task-delegator")
    assert broker.kernel.agent_standing(agent.sub)[1] == ""
    now, proof = int(broker.clock.now()), "p" * 20
    message = heartbeat_signing_input(agent.sub, agent.claims.jti, now, proof, True)
    session = broker.heartbeat(
        agent.claims,
        timestamp=now,
        jti=proof,
        signature=base64.b64encode(agent.key.sign(message).signature).decode(),
        done=True,
        ctx=kit.ctx,
    )
    assert session.state == "released"
    broker.clock.advance(1)
    # Done ends its token by token and chain entries, not an agent-level one: only its
    # session says the registration is over.
    assert broker.kernel.revocations.revoked_at("agent", agent.sub) is None
    _, why = broker.kernel.agent_standing(agent.sub)
    assert why == "agent session is released"
    with pytest.raises(NotFound) as delegation:
        broker.delegate(
            delegator.claims, delegate_to=agent.sub, scope=["read:data:1"], ttl=60, ctx=kit.ctx
        )
    assert "agent session is released" in _denial_detail(broker, delegation.value.denial_id)
    nonce, _ = broker.challenge()
    with pytest.raises(Forbidden) as resumption:
        broker.resume(
            agent_id=agent.sub,
            nonce=nonce,
            signature=base64.b64encode(agent.key.sign(bytes.fromhex(nonce)).signature).decode(),
            ctx=kit.ctx,
        )
    assert "agent session is released" in _denial_detail(broker, resumption.value.denial_id)


@pytest.mark.parametrize("attest", ["{not json", '{"type": 7}'])
def test_an_agent_whose_attestation_cannot_be_read_is_out_of_standing(
    broker: Any, kit: Any, attest: str
) -> None:
    agent = kit.register(broker)
    record = broker.store.get_agent(agent.sub)
    assert broker.kernel.standing(record, broker.store.get_agent_session) == ""
    broken = replace(record, attest=attest)
    why = broker.kernel.standing(broken, broker.store.get_agent_session)
    assert why == "agent's attestation record is unreadable"
