"""``holder_binding = "required"`` (decision 253): a registration that binds its agent's
tokens to no key (no DPoP proof, no client certificate) is refused with a ``denial_id``
and one audit event, before anything is spent; a bound one is admitted, and every token
of that agent carries the binding."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tasklease.core.config import Config
from tasklease.core.errors import InvalidRequest
from tasklease.core.store import AuditQuery

THUMBPRINT = "x" * 43  # a client certificate's x5t#S256, as the TLS layer sets it


def _events(broker: Any, denial_id: str) -> list[Any]:
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    return [e for e in events if f"denial={denial_id}" in e.detail]


def test_an_unbound_registration_is_refused_and_the_launch_token_kept(
    make_broker: Any, kit: Any
) -> None:
    broker = make_broker(holder_binding="required")
    launch_token = kit.launch(broker, ["read:data:*"])
    args, _ = kit.register_args(broker, launch_token)
    with pytest.raises(InvalidRequest) as refused:
        broker.register(**args)
    assert refused.value.detail.startswith("holder binding required")
    [event] = _events(broker, refused.value.denial_id)
    assert event.event_type == "registration_failed" and event.outcome == "denied"
    assert "no DPoP proof, no client certificate" in event.detail
    # Nothing was spent: the same launch token registers once bound (here over mTLS).
    args, _ = kit.register_args(broker, launch_token)
    args["ctx"] = replace(args["ctx"], cert_thumbprint=THUMBPRINT)
    issued = broker.register(**args)
    assert issued.claims.raw["cnf"] == {"x5t#S256": THUMBPRINT}


def test_bearer_agents_are_admitted_by_default(make_broker: Any, kit: Any) -> None:
    broker = make_broker()
    assert broker.config.holder_binding == "optional"
    assert "cnf" not in kit.register(broker).claims.raw


def test_an_unknown_holder_binding_is_refused() -> None:
    with pytest.raises(ValueError, match="holder_binding"):
        Config(holder_binding="sometimes")
