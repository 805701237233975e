"""``launch_token_binding = "required"`` (decision 254): a launch token must name the agent
key that alone may register with it; one without is refused before anything is made."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.config import Config
from tasklease.core.errors import InvalidRequest
from tasklease.core.records import ListQuery
from tasklease.core.store import AuditQuery


def test_a_launch_token_without_an_agent_key_is_refused(make_broker: Any, kit: Any) -> None:
    broker = make_broker(launch_token_binding="required")
    with pytest.raises(InvalidRequest) as refused:
        kit.launch(broker)
    assert refused.value.detail.startswith("agent_key is required")
    events, _ = broker.store.query_audit(AuditQuery(limit=100))
    [event] = [e for e in events if f"denial={refused.value.denial_id}" in e.detail]
    assert event.event_type == "launch_token_denied" and "no agent_key" in event.detail
    assert broker.store.list_launch_tokens(ListQuery(), broker.clock.now()) == []  # none made
    key = SigningKey.generate()
    token = kit.launch(broker, agent_key=base64.b64encode(bytes(key.verify_key)).decode())
    args, _ = kit.register_args(broker, token, key=key)
    assert broker.register(**args).claims.sub.startswith("spiffe://")


def test_any_launch_token_by_default(make_broker: Any, kit: Any) -> None:
    broker = make_broker()
    assert broker.config.launch_token_binding == "optional"
    key = SigningKey.generate()
    args, _ = kit.register_args(broker, kit.launch(broker), key=key)  # any key registers
    assert broker.register(**args).claims.sub.startswith("spiffe://")


def test_an_unknown_launch_token_binding_is_refused() -> None:
    with pytest.raises(ValueError, match="launch_token_binding"):
        Config(launch_token_binding="sometimes")
