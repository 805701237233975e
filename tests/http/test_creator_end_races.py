# Would fail if: a registration checked while its launch token's creator stood, and
# committed after the creator was ended (removed, re-keyed, its tokens revoked at level
# agent) or its app narrowed, were admitted: an agent registered after the change was
# answered, and valid.
"""Races over real sockets, ``tasklease serve --workers 2`` on one SQLite file: ending a
launch token's creator, or narrowing its app, wins over the registrations in flight with
it (docs/decisions.md 128, 178, 185 and 220)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import SHARED_ENV, RunningBroker
from race_support import Outcome, race_registrations

pytestmark = pytest.mark.slow

SCOPE = ["read:data:*"]


def _two_workers(start_broker: Callable[..., RunningBroker]) -> RunningBroker:
    return start_broker(env=SHARED_ENV, args=("--workers", "2"))


def _operator(broker: RunningBroker) -> tuple[str, str]:
    """A new operator (role operator) and its token."""
    name = f"op-{secrets.token_hex(3)}"
    created = broker.post(
        "/v1/admin/operators",
        json={"name": name, "role": "operator"},
        headers=broker.admin_headers(),
    )
    assert created.status_code == 201, created.text
    signed = broker.post(
        "/v1/operator/auth", json={"name": name, "secret": created.json()["secret"]}
    )
    assert signed.status_code == 200, signed.text
    return name, signed.json()["access_token"]


def _many_uses(broker: RunningBroker, bearer: str, route: str = "/v1/admin/launch-tokens") -> str:
    return broker.launch_token(
        SCOPE, bearer=bearer, route=route, single_use=False, max_uses=10_000, ttl=600
    )


def _assert_the_end_won(outcome: Outcome) -> None:
    assert outcome.registered_before >= 1
    assert outcome.registered_after_end == [], outcome
    assert outcome.valid_after_end == [], outcome


@pytest.mark.parametrize("end", ["removal", "agent_revocation"])
def test_an_operators_end_wins_over_registrations_in_flight(
    start_broker: Callable[..., RunningBroker], end: str
) -> None:
    broker = _two_workers(start_broker)
    name, bearer = _operator(broker)
    launch = _many_uses(broker, bearer)

    def removal() -> httpx.Response:
        return broker.client.delete(f"/v1/admin/operators/{name}", headers=broker.admin_headers())

    def agent_revocation() -> httpx.Response:
        return broker.revoke("agent", f"operator:{name}")

    ending, event = {
        "removal": (removal, "operator_removed"),
        "agent_revocation": (agent_revocation, "token_revoked"),
    }[end]
    _assert_the_end_won(race_registrations([broker], launch, SCOPE, ending, event))


def test_an_apps_new_key_wins_over_registrations_in_flight(
    start_broker: Callable[..., RunningBroker],
) -> None:
    broker = _two_workers(start_broker)
    app = broker.create_app(SCOPE)
    launch = _many_uses(broker, broker.app_token(app), route="/v1/app/launch-tokens")
    public = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    outcome = race_registrations(
        [broker],
        launch,
        SCOPE,
        lambda: broker.client.put(
            f"/v1/admin/apps/{app['app_id']}",
            json={"public_key": base64.b64encode(public).decode()},
            headers=broker.admin_headers(),
        ),
        "app_updated",
    )
    _assert_the_end_won(outcome)


def test_narrowing_an_app_wins_over_registrations_in_flight(
    start_broker: Callable[..., RunningBroker],
) -> None:
    broker = _two_workers(start_broker)
    app = broker.create_app(["read:data:*", "write:data:*"])
    launch = broker.launch_token(
        ["read:data:*", "write:data:*"],
        bearer=broker.app_token(app),
        route="/v1/app/launch-tokens",
        single_use=False,
        max_uses=10_000,
        ttl=600,
    )
    outcome = race_registrations(
        [broker],
        launch,
        ["write:data:x"],
        lambda: broker.client.put(
            f"/v1/admin/apps/{app['app_id']}",
            json={"scopes": ["read:data:*"]},
            headers=broker.admin_headers(),
        ),
        "app_updated",
        refused=frozenset({401, 403}),
    )
    _assert_the_end_won(outcome)
