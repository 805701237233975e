# Would fail if: introspection stopped answering `{"active": false}` to an app for the
# tokens of another app's agents (its `client_id` comparison), or an app token were
# accepted on an operator route.
"""TM-36 — cross-tenant access, inside one tenant: the app is the boundary there.

Between tenants, ``test_tm_36_tenants.py``. Here, two apps of one tenant and their
agents: an app introspects only its own agents' tokens, holds no operator power
(revocation, audit, apps, keys), launches only within its own ceiling, cannot
authenticate as another app, and the removal of one app leaves the other untouched; an
agent revokes only its own tokens.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import RunningBroker
from threat_support import bearer, refused

pytestmark = pytest.mark.slow


class Tenant:
    """An app, its app token and one agent it launched."""

    def __init__(self, broker: RunningBroker, name: str, scope: list[str]) -> None:
        self.app = broker.create_app(scope, name=name)
        self.token = broker.app_token(self.app)
        launch = broker.launch_token(scope, bearer=self.token, route="/v1/app/launch-tokens")
        self.agent = broker.register(scope, launch_token=launch)


@pytest.fixture(scope="module")
def tenants(broker: RunningBroker) -> tuple[Tenant, Tenant]:
    return (
        Tenant(broker, "tenant-blue", ["read:tickets:*"]),
        Tenant(broker, "tenant-red", ["read:payroll:*"]),
    )


def _introspect(broker: RunningBroker, caller: str, token: str) -> dict[str, Any]:
    resp = broker.post("/v1/introspect", json={"token": token}, headers=bearer(caller))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_an_app_introspects_only_its_own_agents(
    broker: RunningBroker, tenants: tuple[Tenant, Tenant]
) -> None:
    blue, red = tenants
    assert _introspect(broker, blue.token, blue.agent.access_token)["active"] is True
    assert _introspect(broker, blue.token, red.agent.access_token) == {"active": False}
    assert _introspect(broker, red.token, blue.agent.access_token) == {"active": False}
    # An agent cannot introspect at all (no scanning of other agents' tokens).
    resp = broker.post(
        "/v1/introspect", json={"token": red.agent.access_token}, headers=blue.agent.bearer
    )
    refused(broker, resp, 401, "unauthorized")  # RFC 7662 section 2.3


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/revoke", {"level": "agent", "target": "{red_agent}"}),
        ("POST", "/v1/revoke", {"level": "task", "target": "{red_task}"}),
        ("GET", "/v1/audit/events", None),
        ("GET", "/v1/admin/apps", None),
        ("GET", "/v1/admin/apps/{red_app}", None),
        ("PUT", "/v1/admin/apps/{red_app}", {"scopes": ["read:tickets:*"]}),
        ("DELETE", "/v1/admin/apps/{red_app}", None),
        ("POST", "/v1/admin/keys/rotate", None),
        (
            "POST",
            "/v1/admin/launch-tokens",
            {"agent_name": "x", "allowed_scope": ["read:payroll:*"]},
        ),
    ],
    ids=[
        "revoke-agent",
        "revoke-task",
        "read-audit",
        "list-apps",
        "read-app",
        "update-app",
        "remove-app",
        "rotate-keys",
        "operator-launch",
    ],
)
def test_an_app_holds_no_operator_power_over_another(
    broker: RunningBroker,
    tenants: tuple[Tenant, Tenant],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    blue, red = tenants
    names = {
        "red_agent": red.agent.agent_id,
        "red_task": red.agent.task_id,
        "red_app": red.app["app_id"],
    }
    if body is not None:
        body = {k: v.format(**names) if isinstance(v, str) else v for k, v in body.items()}
    resp = broker.client.request(
        method, path.format(**names), json=body, headers=bearer(blue.token)
    )
    refused(broker, resp, 403, "insufficient_scope")
    # The other tenant is untouched.
    assert broker.is_valid(red.agent.access_token)
    app = broker.get(f"/v1/admin/apps/{red.app['app_id']}", headers=broker.admin_headers()).json()
    assert app["status"] == "active" and app["scopes"] == ["read:payroll:*"]


def test_an_app_launches_only_within_its_own_ceiling(
    broker: RunningBroker, tenants: tuple[Tenant, Tenant]
) -> None:
    blue, _ = tenants
    resp = broker.post(
        "/v1/app/launch-tokens",
        json={"agent_name": "into-red", "allowed_scope": ["read:payroll:*"]},
        headers=bearer(blue.token),
    )
    refused(broker, resp, 403, "forbidden", "ceiling")


def test_an_app_cannot_authenticate_as_another(
    broker: RunningBroker, tenants: tuple[Tenant, Tenant]
) -> None:
    blue, red = tenants
    for client_id, secret in (
        (blue.app["client_id"], red.app["client_secret"]),
        (red.app["client_id"], blue.app["client_secret"]),
    ):
        resp = broker.post("/v1/app/auth", json={"client_id": client_id, "client_secret": secret})
        refused(broker, resp, 401, "unauthorized")


def test_an_agent_revokes_only_its_own_tokens(
    broker: RunningBroker, tenants: tuple[Tenant, Tenant]
) -> None:
    blue, red = tenants
    resp = broker.post(
        "/v1/token/revoke", json={"token": red.agent.access_token}, headers=blue.agent.bearer
    )
    refused(broker, resp, 403, "forbidden")
    assert broker.is_valid(red.agent.access_token)


def test_removing_one_app_leaves_the_other_working(broker: RunningBroker) -> None:
    keep = Tenant(broker, "tenant-green", ["read:orders:*"])
    gone = Tenant(broker, "tenant-grey", ["read:orders:*"])
    removed = broker.client.delete(
        f"/v1/admin/apps/{gone.app['app_id']}", headers=broker.admin_headers()
    )
    assert removed.status_code == 200, removed.text
    assert not broker.is_valid(gone.agent.access_token)
    assert broker.is_valid(keep.agent.access_token)
    assert _introspect(broker, keep.token, keep.agent.access_token)["active"] is True
    resp = broker.post("/v1/token/renew", headers=bearer(gone.agent.access_token))
    refused(broker, resp, 401, "unauthorized")
