"""An operator's change made through one worker of ``tasklease serve --workers 2`` (one
SQLite file) is enforced by the other within its bound, whatever that worker had already
seen before the change."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker

pytestmark = pytest.mark.slow

BOUND = 3.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningBroker]:
    running = launch_broker(tmp_path / "data", dict(SHARED_ENV), args=("--workers", "2"))
    yield running
    stop_broker(running)


def _fresh(broker: RunningBroker, method: str, path: str, **kwargs: object) -> httpx.Response:
    """One request on a connection of its own: the kernel spreads them over the workers."""
    with httpx.Client(base_url=broker.url, timeout=15) as client:
        return client.request(method, path, **kwargs)  # type: ignore[arg-type]


def _everywhere(check: Callable[[], bool]) -> None:
    """``check`` holds on 20 fresh connections in a row, within the bound."""
    deadline = time.monotonic() + BOUND
    while not all(check() for _ in range(20)):
        assert time.monotonic() < deadline, "not enforced by every worker within the bound"
        time.sleep(0.05)


def test_app_operator_and_tenant_changes_reach_the_other_worker(broker: RunningBroker) -> None:
    app = broker.create_app(["read:data:*"])
    app_token = broker.app_token(app)
    name = f"op-{secrets.token_hex(3)}"
    made = broker.post(
        "/v1/admin/operators", json={"name": name, "role": "admin"}, headers=broker.admin_headers()
    )
    operator = broker.post(
        "/v1/operator/auth", json={"name": name, "secret": made.json()["secret"]}
    ).json()["access_token"]
    view = broker.create_tenant("acme")
    agent = view.register(["read:data:1"])

    def launch() -> int:
        return _fresh(
            broker,
            "POST",
            "/v1/app/launch-tokens",
            json={"agent_name": "x", "allowed_scope": ["read:data:1"]},
            headers={"Authorization": f"Bearer {app_token}"},
        ).status_code

    def agents() -> int:
        return _fresh(
            broker, "GET", "/v1/admin/agents", headers={"Authorization": f"Bearer {operator}"}
        ).status_code

    def tenant_validate() -> int:
        return _fresh(
            broker, "POST", "/t/acme/v1/token/validate", json={"token": agent.access_token}
        ).status_code

    # Every worker has seen (and remembered) each credential.
    for _ in range(10):
        assert launch() == 201 and agents() == 200 and tenant_validate() == 200
    admin = broker.admin_headers()
    assert (
        broker.post(f"/v1/admin/apps/{app['app_id']}/rotate-secret", headers=admin).status_code
        == 200
    )
    assert broker.client.delete(f"/v1/admin/operators/{name}", headers=admin).status_code == 200
    assert broker.client.delete("/v1/admin/tenants/acme", headers=admin).status_code == 200
    _everywhere(lambda: launch() == 401)
    _everywhere(lambda: agents() == 401)
    _everywhere(lambda: tenant_validate() == 404)
