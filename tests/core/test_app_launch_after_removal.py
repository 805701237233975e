# Would fail if: an app token authenticated before its app was deregistered could still
# mint launch tokens (the app's status read again when the launch token is made).
"""A launch token is made for an app only while the app is active.

The app token is checked at the door; the app itself is read again when the launch token
is made, so a request that passed authentication just before an administrator
deregistered the app (or that holds claims cached from before) gets nothing: 403, audited
under its ``denial_id``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.errors import Forbidden
from tasklease.core.store import AuditQuery


def test_a_deregistered_apps_claims_make_no_launch_token(broker: Any, kit: Any) -> None:
    admin = kit.admin(broker).claims
    app, secret = broker.register_app(
        admin, name="billing-bot", scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    issued = broker.app_auth(app.client_id, secret, kit.ctx)
    claims = broker.authenticate(kit.bearer(issued.token), kit.ctx)  # passed the door
    request = {
        "agent_name": "worker",
        "allowed_scope": ["read:data:x"],
        "max_ttl": None,
        "single_use": None,
        "ttl": None,
        "ctx": kit.ctx,
    }
    made, _ = broker.create_launch_token(claims, **request)  # while the app is active
    assert made
    broker.deregister_app(admin, app.app_id, kit.ctx)

    with pytest.raises(Forbidden) as refused:
        broker.create_launch_token(claims, **request)
    assert refused.value.detail == "app not found or not active"
    denial_id = refused.value.denial_id
    assert denial_id
    events, _ = broker.store.query_audit(AuditQuery(event_type="launch_token_denied"))
    (event,) = [e for e in events if e.detail.endswith(f"denial={denial_id}")]
    assert event.agent_id == f"app:{app.app_id}" and 'reason="app not active"' in event.detail
