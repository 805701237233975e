# Would fail if: a registration on one replica, checked while its launch token's creator
# stood (or its app's ceiling allowed it) and committed after another replica ended the
# creator (or narrowed the app), were admitted.
"""Two replicas on one PostgreSQL database: ending a launch token's creator, or narrowing
its app, on one wins over the registrations in flight with it on both
(docs/decisions.md 128 and 220)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from e2e_support import RunningBroker
from race_support import race_registrations

pytestmark = pytest.mark.slow

Replicas = Callable[..., list[RunningBroker]]
SCOPE = ["read:data:*"]


def test_operator_removal_on_one_replica_wins_over_registrations_on_both(
    pg_url: str, replicas: Replicas
) -> None:
    a, b = replicas(pg_url)
    name = f"op-{secrets.token_hex(3)}"
    created = a.post(
        "/v1/admin/operators", json={"name": name, "role": "operator"}, headers=a.admin_headers()
    )
    assert created.status_code == 201, created.text
    signed = a.post("/v1/operator/auth", json={"name": name, "secret": created.json()["secret"]})
    assert signed.status_code == 200, signed.text
    launch = a.launch_token(
        SCOPE, bearer=signed.json()["access_token"], single_use=False, max_uses=10_000, ttl=600
    )
    outcome = race_registrations(
        [a, b],
        launch,
        SCOPE,
        lambda: b.client.delete(f"/v1/admin/operators/{name}", headers=b.admin_headers()),
        "operator_removed",
    )
    assert outcome.registered_before >= 1
    assert outcome.registered_after_end == [], outcome
    assert outcome.valid_after_end == [], outcome


def test_narrowing_an_app_on_one_replica_wins_over_registrations_on_both(
    pg_url: str, replicas: Replicas
) -> None:
    a, b = replicas(pg_url)
    app = a.create_app(["read:data:*", "write:data:*"])
    launch = a.launch_token(
        ["read:data:*", "write:data:*"],
        bearer=a.app_token(app),
        route="/v1/app/launch-tokens",
        single_use=False,
        max_uses=10_000,
        ttl=600,
    )
    outcome = race_registrations(
        [a, b],
        launch,
        ["write:data:x"],
        lambda: b.client.put(
            f"/v1/admin/apps/{app['app_id']}",
            json={"scopes": ["read:data:*"]},
            headers=b.admin_headers(),
        ),
        "app_updated",
        refused=frozenset({401, 403}),
    )
    assert outcome.registered_before >= 1
    assert outcome.registered_after_end == [], outcome
