"""The console's signing-key page (``admin:keys:*``): the keys the JWKS publishes, and
retiring an older one behind a confirmation, in process over the app's ASGI interface."""

from __future__ import annotations

import httpx
from tests.console.console_support import (
    ADMIN_SECRET,
    CTX,
    DENIAL,
    ORIGIN,
    form_csrf,
    in_process_broker,
    run,
    sign_in,
)

from tasklease.core.broker import Broker
from tasklease.core.store import AuditQuery


def _rotated() -> tuple[Broker, str, str]:
    broker = in_process_broker()
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    new_kid, old_kid = broker.rotate_signing_key(admin, CTX)
    return broker, new_kid, old_kid


def test_an_older_key_is_retired_after_its_confirmation() -> None:
    broker, new_kid, old_kid = _rotated()

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, ...]:
        signed = await sign_in(client)
        assert signed.status_code == 303, signed.text
        listed = await client.get("/console/keys")
        confirm = await client.get("/console/keys/retire", params={"kid": old_kid})
        posted = await client.post(
            "/console/keys/retire",
            data={"csrf": form_csrf(confirm.text), "kid": old_kid},
            headers={"origin": ORIGIN},
        )
        after = await client.get("/console/keys")
        active = await client.get("/console/keys/retire", params={"kid": new_kid})
        return listed, confirm, posted, after, active

    listed, confirm, posted, after, active = run(broker, go)
    assert listed.status_code == 200 and new_kid in listed.text
    assert f"/console/keys/retire?kid={old_kid}" in listed.text
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    assert posted.status_code == 303 and posted.headers["location"].endswith("/console/keys")
    assert broker.keyring.kids() == [new_kid]
    assert old_kid not in after.text
    assert active.status_code == 404  # the active key has no retire page
    events, _ = broker.store.query_audit(AuditQuery(limit=1000))
    [retired] = [e for e in events if e.event_type == "signing_key_retired"]
    assert f"kid={old_kid}" in retired.detail and "by=admin" in retired.detail


def test_a_retire_form_without_its_csrf_value_retires_nothing() -> None:
    broker, new_kid, old_kid = _rotated()

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        await sign_in(client)
        return await client.post(
            "/console/keys/retire",
            data={"csrf": "guessed", "kid": old_kid},
            headers={"origin": ORIGIN},
        )

    refused = run(broker, go)
    assert refused.status_code == 403 and DENIAL.search(refused.text)
    assert broker.keyring.kids() == [new_kid, old_kid]


def test_an_auditors_session_has_no_keys_page() -> None:
    broker, _, old_kid = _rotated()
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    _, secret = broker.add_operator(admin, name="audrey", role="auditor", public_key=None, ctx=CTX)

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        signed = await sign_in(client, "audrey", secret)
        assert signed.status_code == 303, signed.text
        return await client.get("/console/"), await client.get("/console/keys")

    home, keys = run(broker, go)
    assert "Signing keys" not in home.text
    assert keys.status_code == 403 and DENIAL.search(keys.text)
