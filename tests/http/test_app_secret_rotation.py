"""``POST /v1/admin/apps/{app_id}/rotate-secret`` against a real broker over loopback
HTTP, and its SDK (``AdminClient.rotate_app_secret``) and CLI (``tasklease app
rotate-secret``) paths.

A leaked app secret could only be ended by deregistering the app, which ends every agent
it launched. Rotation gives the app a new secret made by the broker (answered once): the
old one is refused at once, the app tokens signed in before end, and so do the launch
tokens the app made (someone who held the secret may have made them), as an operator's
rotation ends its own; the agents it launched keep working. Every refusal (404, 409, 403)
carries a ``denial_id`` naming its one audit event, and the one ``app_secret_rotated``
event holds no secret.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import nacl.signing
import pytest
from e2e_support import (
    SHARED_ENV,
    RunningBroker,
    assert_problem,
    b64,
    free_port,
    launch_broker,
    stop_broker,
)
from typer.testing import CliRunner

from tasklease.cli.main import app as cli_app
from tasklease.client import AdminClient, AppClient
from tasklease.client import Conflict as ClientConflict
from tasklease.client import NotFound as ClientNotFound

SCOPE = ["read:data:*"]
ROTATE = "/v1/admin/apps/{}/rotate-secret"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker whose issuer is its URL (a ``private_key_jwt`` assertion names it), with
    a small ``clock_skew``: a rotated app signs in again once its entry, dated
    ``clock_skew`` past the change, is past (decision 142)."""
    port = free_port()
    env = {
        **SHARED_ENV,
        "TASKLEASE_CLOCK_SKEW": "2",
        "TASKLEASE_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    running = launch_broker(tmp_path_factory.mktemp("app-secret-broker"), env, port=port)
    yield running
    stop_broker(running)


def _sign_in(broker: RunningBroker, client_id: str, secret: str) -> httpx.Response:
    return broker.post("/v1/app/auth", json={"client_id": client_id, "client_secret": secret})


def _sign_in_once_past(broker: RunningBroker, client_id: str, secret: str) -> str:
    """The app token of a just-rotated app: 503 with ``Retry-After`` until its entry is
    past, then 200."""
    for _ in range(6):
        resp = _sign_in(broker, client_id, secret)
        if resp.status_code != 503:
            break
        assert "changed moments ago" in resp.json()["detail"], resp.text
        time.sleep(float(resp.headers["retry-after"]))
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def _events(broker: RunningBroker, event_type: str) -> list[dict[str, Any]]:
    resp = broker.get(
        "/v1/audit/events",
        params={"event_type": event_type, "limit": 1000},
        headers=broker.admin_headers(),
    )
    assert resp.status_code == 200, resp.text
    return list(resp.json()["events"])


def _denied(broker: RunningBroker, resp: httpx.Response, event_type: str) -> str:
    """The detail of the one ``event_type`` event the refusal's ``denial_id`` names."""
    denial = resp.json()["denial_id"]
    assert denial, resp.text
    hits = [e["detail"] for e in _events(broker, event_type) if f"denial={denial}" in e["detail"]]
    assert len(hits) == 1, (event_type, denial, hits)
    return str(hits[0])


def _multi_use_launch_token(broker: RunningBroker, app_token: str) -> str:
    return broker.launch_token(
        SCOPE, bearer=app_token, route="/v1/app/launch-tokens", single_use=False, max_uses=10
    )


def test_rotation_ends_the_old_secret_and_app_tokens_and_keeps_the_agents(
    broker: RunningBroker,
) -> None:
    app = broker.create_app(SCOPE)
    app_id, client_id, old = app["app_id"], app["client_id"], app["client_secret"]
    old_token = broker.app_token(app)
    launch = _multi_use_launch_token(broker, old_token)
    agent = broker.register(SCOPE, launch_token=launch)
    admin_launch = broker.launch_token(SCOPE, single_use=False, max_uses=10)

    resp = broker.post(ROTATE.format(app_id), headers=broker.admin_headers())
    assert resp.status_code == 200, resp.text
    rotated = resp.json()
    new = rotated["client_secret"]
    assert len(new) == len(old) and new != old
    assert rotated["app_id"] == app_id and rotated["client_id"] == client_id
    assert rotated["status"] == "active" and rotated["scopes"] == SCOPE
    assert "secret_hash" not in rotated
    # Shown once: reading the app again shows no secret.
    shown = broker.get(f"/v1/admin/apps/{app_id}", headers=broker.admin_headers()).json()
    assert "client_secret" not in shown

    # The old secret is refused at once, at both doors, each refusal with its denial.
    refused = _sign_in(broker, client_id, old)
    assert_problem(refused, 401, "unauthorized")
    assert "reason=wrong_secret" in _denied(broker, refused, "app_auth_failed")
    by_oauth = broker.post(
        "/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, old),
    )
    assert by_oauth.status_code == 401 and by_oauth.json()["error"] == "invalid_client"
    assert "reason=wrong_secret" in _denied(broker, by_oauth, "app_auth_failed")

    # The app token signed in with it is ended.
    again = broker.post(
        "/v1/app/launch-tokens",
        json={"agent_name": "w", "allowed_scope": SCOPE},
        headers={"Authorization": f"Bearer {old_token}"},
    )
    assert again.status_code == 401, again.text
    assert again.json()["denial_id"]

    # The agent it launched keeps working: its token validates and renews.
    assert broker.is_valid(agent.access_token)
    renewed = broker.post("/v1/token/renew", headers=agent.bearer)
    assert renewed.status_code == 200, renewed.text
    assert broker.is_valid(renewed.json()["access_token"])

    # The launch token the app made (someone holding the secret may have) admits no
    # agent more; an operator's launch tokens are not the app's, and keep working.
    body, _ = broker.register_body(launch, SCOPE)
    late = broker.post("/v1/register", json=body)
    assert late.status_code == 401, late.text
    assert "launch token" in _denied(broker, late, "registration_failed")
    assert broker.register(SCOPE, launch_token=admin_launch)

    # The new secret signs in (once the rotation's entry is past), and launches again.
    new_token = _sign_in_once_past(broker, client_id, new)
    fresh = _multi_use_launch_token(broker, new_token)
    assert broker.is_valid(broker.register(SCOPE, launch_token=fresh).access_token)

    # One event, naming the app and who rotated, holding neither secret.
    (event,) = [e for e in _events(broker, "app_secret_rotated") if app_id in e["detail"]]
    assert event["outcome"] == "success"
    assert "by=admin" in event["detail"] and f"target=app:{app_id}" in event["detail"]
    assert old not in str(event) and new not in str(event)


def test_refusals_carry_a_denial(broker: RunningBroker) -> None:
    # Unknown app: 404.
    unknown = broker.post(ROTATE.format("app-nobody-000000"), headers=broker.admin_headers())
    assert_problem(unknown, 404, "not_found")
    assert "no such app" in _denied(broker, unknown, "app_secret_rotation_denied")

    # A role without the apps scope: 403, nothing changed.
    app = broker.create_app(SCOPE)
    auditor = broker.operator_token("auditor")
    wrong = broker.post(
        ROTATE.format(app["app_id"]), headers={"Authorization": f"Bearer {auditor}"}
    )
    assert_problem(wrong, 403, "insufficient_scope")
    assert "rotate-secret" in _denied(broker, wrong, "scope_violation")
    assert broker.app_token(app)  # the secret still signs in

    # An app token is no admin's: refused too.
    own = broker.app_token(app)
    by_app = broker.post(ROTATE.format(app["app_id"]), headers={"Authorization": f"Bearer {own}"})
    assert_problem(by_app, 403, "insufficient_scope")
    assert "rotate-secret" in _denied(broker, by_app, "scope_violation")
    assert broker.app_token(app)

    # A deregistered app: 409, and it stays so (its secret does not come back).
    gone = broker.client.delete(f"/v1/admin/apps/{app['app_id']}", headers=broker.admin_headers())
    assert gone.status_code == 200, gone.text
    conflict = broker.post(ROTATE.format(app["app_id"]), headers=broker.admin_headers())
    assert_problem(conflict, 409, "conflict")
    assert "already deregistered" in _denied(broker, conflict, "app_secret_rotation_denied")
    assert "client_secret" not in conflict.text
    shown = broker.get(f"/v1/admin/apps/{app['app_id']}", headers=broker.admin_headers())
    assert shown.json()["status"] == "inactive"


def test_an_app_with_a_key_gets_a_new_secret_and_keeps_its_key(broker: RunningBroker) -> None:
    key = nacl.signing.SigningKey.generate()
    body = {
        "name": f"keyed-{secrets.token_hex(4)}",
        "scopes": SCOPE,
        "public_key": b64(bytes(key.verify_key)),
    }
    made = broker.post("/v1/admin/apps", json=body, headers=broker.admin_headers())
    assert made.status_code == 201, made.text
    app = made.json()
    with AppClient(broker.url, app["client_id"], private_key=key) as by_key:
        before = by_key.app_token()

    rotated = broker.post(ROTATE.format(app["app_id"]), headers=broker.admin_headers()).json()
    assert rotated["public_key"] == app["public_key"]
    assert rotated["client_secret"] != app["client_secret"]
    # Every app token ends, those its key signed in for too; the key signs in again.
    again = broker.post(
        "/v1/app/launch-tokens",
        json={"agent_name": "w", "allowed_scope": SCOPE},
        headers={"Authorization": f"Bearer {before}"},
    )
    assert again.status_code == 401, again.text
    assert _sign_in(broker, app["client_id"], app["client_secret"]).status_code == 401
    with AppClient(broker.url, app["client_id"], private_key=key) as by_key:
        assert by_key.app_token() != before
    assert _sign_in_once_past(broker, app["client_id"], rotated["client_secret"])


def test_the_sdk_rotates_a_secret(broker: RunningBroker) -> None:
    app = broker.create_app(SCOPE)
    with AdminClient(broker.url, broker.admin_secret) as admin:
        rotated = admin.rotate_app_secret(app["app_id"])
        assert rotated["client_secret"] != app["client_secret"]
        with pytest.raises(ClientNotFound):
            admin.rotate_app_secret("app-nobody-000000")
        admin.remove_app(app["app_id"])
        with pytest.raises(ClientConflict):
            admin.rotate_app_secret(app["app_id"])
    assert _sign_in(broker, app["client_id"], app["client_secret"]).status_code == 401


def test_the_cli_rotates_a_secret_and_shows_it_once(broker: RunningBroker) -> None:
    app = broker.create_app(SCOPE)
    runner = CliRunner()
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TASKLEASE_")}
    env.update({"TASKLEASE_URL": broker.url, "TASKLEASE_ADMIN_SECRET": broker.admin_secret})
    env["COLUMNS"] = "200"

    shown = runner.invoke(cli_app, ["app", "rotate-secret", app["app_id"]], env=env)
    assert shown.exit_code == 0, shown.output
    assert "shown only this once" in shown.stdout
    (line,) = [row for row in shown.stdout.splitlines() if row.startswith("client_secret")]
    secret = line.split()[-1]
    assert secret != app["client_secret"]
    assert _sign_in_once_past(broker, app["client_id"], secret)

    as_json = runner.invoke(cli_app, ["app", "rotate-secret", app["app_id"], "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    assert '"client_secret"' in as_json.stdout and secret not in as_json.stdout

    missing = runner.invoke(cli_app, ["app", "rotate-secret", "app-nobody-000000"], env=env)
    assert missing.exit_code == 1, missing.output
    assert "Traceback" not in missing.output


def test_a_tenants_app_is_rotated_in_its_tenant_only(broker: RunningBroker) -> None:
    acme = broker.create_tenant(f"acme{secrets.token_hex(3)}")
    app = acme.create_app(SCOPE)
    # The default tenant's admin knows no such app.
    elsewhere = broker.post(ROTATE.format(app["app_id"]), headers=broker.admin_headers())
    assert_problem(elsewhere, 404, "not_found")
    assert acme.app_token(app)
    rotated = acme.post(ROTATE.format(app["app_id"]), headers=acme.admin_headers())
    assert rotated.status_code == 200, rotated.text
    assert _sign_in(acme, app["client_id"], app["client_secret"]).status_code == 401
    assert _sign_in_once_past(acme, app["client_id"], rotated.json()["client_secret"])
