"""A launch token bound to its agent's key (``agent_key``, TM-02): whoever copies the
token cannot register with a key of its own, and its refused attempt spends nothing, so
the agent it was made for still registers."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.errors import InvalidRequest, Unauthorized
from tasklease.core.launch import launch_token_hash
from tasklease.core.store import AuditQuery
from tasklease.rules import jws


def _create(broker: Any, kit: Any, agent_key: Any) -> tuple[str, Any]:
    token, record = broker.create_launch_token(
        kit.admin(broker).claims,
        agent_name="bound-agent",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
        agent_key=agent_key,
    )
    return str(token), record


def _bound(broker: Any, kit: Any, key: SigningKey) -> str:
    token, record = _create(broker, kit, base64.b64encode(bytes(key.verify_key)).decode())
    assert record.agent_key == jws.b64url_encode(bytes(key.verify_key))
    return token


def test_only_the_bound_key_registers_and_a_thief_spends_nothing(
    make_broker: Any, kit: Any
) -> None:
    broker = make_broker()
    genuine = SigningKey.generate()
    token = _bound(broker, kit, genuine)
    # A thief holding a copy of the token, with a key of its own (proven: it signs the
    # nonce with it), is refused, audited under its denial id.
    stolen, _ = kit.register_args(broker, token, ["read:data:*"], task_id="thief")
    with pytest.raises(Unauthorized) as refused:
        broker.register(**stolen)
    assert "bound to another agent key" in refused.value.detail
    events, _ = broker.store.query_audit(AuditQuery(limit=1000))
    [event] = [e for e in events if f"denial={refused.value.denial_id}" in e.detail]
    assert event.event_type == "registration_failed"
    assert f"agent_key={jws.b64url_encode(bytes(genuine.verify_key))}" in event.detail
    # Nothing was spent: the single-use token still admits its agent.
    assert broker.store.get_launch_token(launch_token_hash(token)).uses == 0
    args, _ = kit.register_args(broker, token, ["read:data:*"], task_id="genuine", key=genuine)
    issued = broker.register(**args)
    assert issued.claims.sub.startswith("spiffe://")
    assert broker.store.get_launch_token(launch_token_hash(token)).uses == 1


def test_an_unbound_token_admits_any_key(make_broker: Any, kit: Any) -> None:
    broker = make_broker()
    token = kit.launch(broker)
    assert broker.store.get_launch_token(launch_token_hash(token)).agent_key == ""
    assert kit.register(broker, token).token


@pytest.mark.parametrize("bad", ["", "not base64!", base64.b64encode(b"x" * 31).decode(), 7])
def test_a_malformed_agent_key_is_refused_by_name(make_broker: Any, kit: Any, bad: Any) -> None:
    broker = make_broker()
    with pytest.raises(InvalidRequest, match="agent_key"):
        _create(broker, kit, bad)
