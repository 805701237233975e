"""A tenant's console shows nothing of the platform's metrics.

The process's metrics are the platform's (docs/tenants.md, "Metrics"): every tenant's
issuance, refusals and revocations add up in one registry, served by the metrics listener
and the default tenant only. A tenant's operator must not read from its console's overview
how busy the other tenants are (decision 130: not even from the feed's numbers).
"""

from __future__ import annotations

import re
import secrets
import time

import httpx
from tests.console.console_support import ADMIN_SECRET, ORIGIN, form_csrf, in_process_broker, run

from tasklease.core.broker import Broker

_RATE = re.compile(r'<div class="value">([0-9.]+)</div><div class="label">tokens issued / min')


async def _sign_in(client: httpx.AsyncClient, base: str, operator: str, secret: str) -> None:
    form = await client.get(f"{base}/console/login")
    answer = await client.post(
        f"{base}/console/login",
        data={"csrf": form_csrf(form.text), "operator": operator, "secret": secret},
        headers={"origin": ORIGIN},
    )
    assert answer.status_code == 303, answer.text[:500]


def _issued_rate(page: str) -> float:
    found = _RATE.search(page)
    return 0.0 if found is None else float(found.group(1))


def test_a_tenants_console_does_not_show_the_platforms_rates() -> None:
    broker: Broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> None:
        signed = await client.post("/v1/admin/auth", json={"secret": ADMIN_SECRET})
        admin = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        name = f"acme-{secrets.token_hex(3)}"
        created = await client.post("/v1/admin/tenants", json={"name": name}, headers=admin)
        assert created.status_code == 201, created.text
        base = f"/t/{name}"
        await _sign_in(client, base, "admin", created.json()["admin_secret"])
        first = await client.get(f"{base}/console/live/overview")
        assert first.status_code == 200, first.text[:500]
        # The default tenant is busy; the tenant does nothing.
        app = await client.post(
            "/v1/admin/apps", json={"name": "busy", "scopes": ["read:x:*"]}, headers=admin
        )
        assert app.status_code == 201, app.text
        credentials = {k: app.json()[k] for k in ("client_id", "client_secret")}
        for _ in range(3):
            assert (await client.post("/v1/app/auth", json=credentials)).status_code == 200
        time.sleep(2.1)  # the sampler takes one sample every 2 s
        second = await client.get(f"{base}/console/live/overview")
        assert second.status_code == 200, second.text[:500]
        assert _issued_rate(second.text) == 0.0, "the tenant's console shows others' issuance"
        assert "tokens issued / min" not in second.text
        assert "revocation propagation p99" not in second.text

    run(broker, go)


def test_the_default_tenants_console_still_shows_them() -> None:
    broker: Broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> None:
        await _sign_in(client, "", "", ADMIN_SECRET)
        page = await client.get("/console/live/overview")
        assert page.status_code == 200, page.text[:500]
        assert "tokens issued / min" in page.text
        assert "revocation propagation p99" in page.text

    run(broker, go)


# Would fail if: a tenant's console sign-in page told its operators to leave the name
# empty to use "the admin secret", which no tenant has (its operators are its own), or
# stopped saying so on the default tenant's, which has one.
def test_only_a_console_with_an_admin_secret_offers_to_sign_in_with_it() -> None:
    broker: Broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> None:
        signed = await client.post("/v1/admin/auth", json={"secret": ADMIN_SECRET})
        admin = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        name = f"acme-{secrets.token_hex(3)}"
        created = await client.post("/v1/admin/tenants", json={"name": name}, headers=admin)
        assert created.status_code == 201, created.text
        own = await client.get("/console/login")
        assert "the admin secret" in own.text
        tenant = await client.get(f"/t/{name}/console/login")
        assert tenant.status_code == 200
        assert "admin secret" not in tenant.text
        assert re.search(r'<input id="operator" name="operator"[^>]* required', tenant.text)

    run(broker, go)
