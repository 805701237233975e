"""A refused admin change to an app, an attestor or a federated trust domain is a refusal
like any other: its status stays (404 for what does not exist, 409 for what is taken or
still being removed), and its ``denial_id`` leads to exactly one audit event naming the
operator, as a refused change to an operator, a tenant or a grant type does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tasklease.core.errors import TaskleaseError
from tasklease.core.store import AuditQuery
from tasklease.http.problems import status_for

_POLICY = [{"match": {"path": "/agent"}, "scope": ["read:x:*"]}]
_PEER = "b.example"


def _app(broker: Any, kit: Any) -> Any:
    app, _ = broker.register_app(
        kit.admin(broker).claims, name="taken", scopes=["read:x:*"], token_ttl=None, ctx=kit.ctx
    )
    return app


def _register_taken(broker: Any, kit: Any, admin: Any) -> None:
    _app(broker, kit)
    broker.register_app(admin, name="taken", scopes=["read:x:*"], token_ttl=None, ctx=kit.ctx)


def _update_unknown(broker: Any, kit: Any, admin: Any) -> None:
    broker.update_app(admin, "app-nope-000000", scopes=None, token_ttl=120, ctx=kit.ctx)


def _update_deregistered(broker: Any, kit: Any, admin: Any) -> None:
    app = _app(broker, kit)
    broker.deregister_app(admin, app.app_id, kit.ctx)
    broker.update_app(admin, app.app_id, scopes=None, token_ttl=120, ctx=kit.ctx)


def _deregister_unknown(broker: Any, kit: Any, admin: Any) -> None:
    broker.deregister_app(admin, "app-nope-000000", kit.ctx)


def _deregister_twice(broker: Any, kit: Any, admin: Any) -> None:
    app = _app(broker, kit)
    broker.deregister_app(admin, app.app_id, kit.ctx)
    broker.deregister_app(admin, app.app_id, kit.ctx)


def _rotate_unknown(broker: Any, kit: Any, admin: Any) -> None:
    broker.rotate_app_secret(admin, "app-nope-000000", kit.ctx)


def _rotate_deregistered(broker: Any, kit: Any, admin: Any) -> None:
    app = _app(broker, kit)
    broker.deregister_app(admin, app.app_id, kit.ctx)
    broker.rotate_app_secret(admin, app.app_id, kit.ctx)


def _attestor_for_unknown_app(broker: Any, kit: Any, admin: Any) -> None:
    broker.attestation.add(
        admin,
        name="spire",
        type="jwt_svid",
        settings={"trust_domain": "prod.example", "federation": True},
        policy=_POLICY,
        app_id="app-nope-000000",
        ctx=kit.ctx,
    )


def _remove_unknown_attestor(broker: Any, kit: Any, admin: Any) -> None:
    broker.attestation.remove(admin, "nope", kit.ctx)


def _federate(broker: Any, kit: Any, admin: Any) -> None:
    broker.federation.add(
        admin,
        trust_domain=_PEER,
        bundle_endpoint_url=f"https://{_PEER}:8443/v1/federation/bundle",
        ctx=kit.ctx,
    )


def _federate_while_removed(broker: Any, kit: Any, admin: Any) -> None:
    _federate(broker, kit, admin)
    broker.federation.remove(admin, _PEER, kit.ctx)
    _federate(broker, kit, admin)


def _remove_unknown_domain(broker: Any, kit: Any, admin: Any) -> None:
    broker.federation.remove(admin, "nope.example", kit.ctx)


Change = Callable[[Any, Any, Any], None]


@pytest.mark.parametrize(
    ("change", "status", "event_type"),
    [
        (_register_taken, 409, "app_registration_denied"),
        (_update_unknown, 404, "app_update_denied"),
        (_update_deregistered, 409, "app_update_denied"),
        (_deregister_unknown, 404, "app_deregistration_denied"),
        (_deregister_twice, 409, "app_deregistration_denied"),
        (_rotate_unknown, 404, "app_secret_rotation_denied"),
        (_rotate_deregistered, 409, "app_secret_rotation_denied"),
        (_attestor_for_unknown_app, 404, "attestor_denied"),
        (_remove_unknown_attestor, 404, "attestor_denied"),
        (_federate_while_removed, 409, "federation_refused"),
        (_remove_unknown_domain, 404, "federation_denied"),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)).lstrip("_"),
)
def test_a_refused_admin_change_names_its_one_audit_event(
    broker: Any, kit: Any, change: Change, status: int, event_type: str
) -> None:
    admin = kit.admin(broker).claims
    with pytest.raises(TaskleaseError) as refused:
        change(broker, kit, admin)
    error = refused.value
    assert status_for(error.code) == status
    assert isinstance(error.denial_id, str) and error.denial_id.startswith("den_")
    events, _ = broker.store.query_audit(AuditQuery(limit=1000))
    named = [e for e in events if e.detail.endswith(f"denial={error.denial_id}")]
    assert len(named) == 1
    [event] = named
    assert event.event_type == event_type and event.outcome == "denied"
    assert f"by={admin.sub}" in event.detail
    assert [e for e in events if e.outcome == "denied"] == named
