# Would fail if: a problem body carried caller text as sent (its `detail`, `instance`,
# `hint` or `error_description`), so that a launch token, client secret or token a caller
# put in a path or a field came back in the error answer.
"""Problem answers hold no credential the caller sent (TM-29).

A caller pastes a credential where an identifier or a name belongs: in the path (the
problem's ``instance``), or in a field the refusal quotes (an unknown ``grant_type``, a
scope). The answer says what was wrong without the credential: error answers are logged
by clients, SDKs and gateways that never log request bodies or paths.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import pytest

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.storage import open_store

# A launch token or client secret (64 hex), and a token's shape (a compact JWS).
HEX = secrets.token_hex(32)
JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0." + "Q" * 86

CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("grant_type", "POST", "/v1/oauth/token", {"data": {"grant_type": HEX}}),
    ("token in a path", "GET", f"/v1/discovery/{JWT}", {}),
    ("secret in an unknown path", "GET", f"/v1/{HEX}", {}),
    ("secret as an app id", "GET", f"/v1/admin/apps/{HEX}", {}),
    ("secret in the envelope's refusal", "POST", f"/v1/{HEX}", {"content": b"[" * 40}),
]


def _answer(method: str, path: str, **kwargs: Any) -> httpx.Response:
    config = Config(admin_secret_hash=hash_secret("a" * 40))
    broker = Broker(config, open_store("memory://"), KeyRing.generate(), nonce_secret=b"n" * 32)
    app = create_app(broker, background=False)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return await c.request(method, path, **kwargs)

    return asyncio.run(run())


@pytest.mark.parametrize(("case", "method", "path", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_a_problem_echoes_no_credential(
    case: str, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    resp = _answer(method, path, **kwargs)
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert HEX not in resp.text and JWT.rsplit(".", 1)[1] not in resp.text, resp.text
    body = resp.json()
    assert body["instance"].startswith("/v1/"), body  # still says where, redacted


def test_an_unexpected_failure_logs_no_credential_from_the_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Would fail if: the last-resort handler logged the path as sent, so that a client
    # secret pasted as an app id reached the log whenever reading the app failed
    # unexpectedly (the access log names the route template for this reason).
    config = Config(admin_secret_hash=hash_secret("a" * 40))
    store = open_store("memory://")
    broker = Broker(config, store, KeyRing.generate(), nonce_secret=b"n" * 32)
    app = create_app(broker, background=False)

    def failing(app_id: str) -> None:
        raise RuntimeError("the store failed")

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            signed = await c.post("/v1/admin/auth", json={"secret": "a" * 40})
            bearer = {"Authorization": f"Bearer {signed.json()['access_token']}"}
            store.get_app = failing  # type: ignore[method-assign]
            return await c.get(f"/v1/admin/apps/{HEX}", headers=bearer)

    with caplog.at_level("ERROR", logger="tasklease.http"):
        resp = asyncio.run(run())
    assert resp.status_code == 500 and HEX not in resp.text
    [record] = [r for r in caplog.records if r.name == "tasklease.http"]
    assert HEX not in record.getMessage(), record.getMessage()
    assert "/v1/admin/apps/{app_id}" in record.getMessage()  # still says where
