"""The console's guards, in process over the app's ASGI interface (no browser): a page
needs the scope of the API route it mirrors, the sign-in form needs its double-submit
cookie, the Origin must be exactly the broker's own, a client whose address is not an IP
is not taken for loopback, ``back`` never leaves the console, and the session cookie and
the pages carry their flags and headers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

ADMIN_SECRET = "console-guards-admin-secret-0123456789"
# httpx's ASGI transport connects from 127.0.0.1; with no public_url the broker's own
# origin is the address it serves on.
ORIGIN = "http://127.0.0.1:8080"
DENIAL = re.compile(r"den_[0-9a-f]{16}")
COOKIE = "tasklease_console"
CTX = RequestContext(request_id="req-1", remote="127.0.0.1")


def _broker() -> Broker:
    return Broker(
        Config(admin_secret_hash=hash_secret(ADMIN_SECRET)),
        MemoryStore(),
        KeyRing.generate(),
        clock=ManualClock(1_800_000_000.0),
        nonce_secret=b"n" * 32,
    )


def _run(
    broker: Broker,
    go: Callable[[httpx.AsyncClient], Awaitable[Any]],
    client: tuple[str, int] = ("127.0.0.1", 40000),
) -> Any:
    async def main() -> Any:
        transport = httpx.ASGITransport(app=create_app(broker, background=False), client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await go(c)

    return asyncio.run(main())


def _csrf(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found is not None, text[:2000]
    return found.group(1)


async def _sign_in(client: httpx.AsyncClient, operator: str, secret: str) -> httpx.Response:
    form = await client.get("/console/login")
    return await client.post(
        "/console/login",
        data={"csrf": _csrf(form.text), "operator": operator, "secret": secret},
        headers={"origin": ORIGIN},
    )


def _auditor(broker: Broker) -> str:
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    _, secret = broker.add_operator(admin, name="audrey", role="auditor", public_key=None, ctx=CTX)
    return secret


def test_an_auditors_session_is_refused_the_app_registry() -> None:
    """The apps page mirrors the app registry's route (``admin:launch-tokens:*``): an
    auditor's session opens the pages every role reads, and not that one."""
    broker = _broker()
    secret = _auditor(broker)

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        signed = await _sign_in(client, "audrey", secret)
        assert signed.status_code == 303, signed.text
        return await client.get("/console/agents"), await client.get("/console/apps")

    agents, apps = _run(broker, go)
    assert agents.status_code == 200
    assert apps.status_code == 403
    assert DENIAL.search(apps.text) is not None


def test_an_auditors_revoke_form_is_refused_and_revokes_nothing() -> None:
    broker = _broker()
    secret = _auditor(broker)

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        signed = await _sign_in(client, "audrey", secret)
        assert signed.status_code == 303, signed.text
        home = await client.get("/console/")
        posted = await client.post(
            "/console/revoke",
            data={"csrf": _csrf(home.text), "level": "task", "target": "t-1"},
            headers={"origin": ORIGIN},
        )
        shown = await client.get("/console/revoke", params={"level": "task", "target": "t-1"})
        return posted, shown

    posted, shown = _run(broker, go)
    assert posted.status_code == 403 and shown.status_code == 403
    assert broker.inventory.revocations(limit=10).items == []


@pytest.mark.parametrize("csrf", ["", "anything"], ids=["empty", "guessed"])
def test_a_sign_in_without_its_forms_cookie_is_refused(csrf: str) -> None:
    """The double submit: a sign-in posted without the cookie the sign-in page set is
    refused, an empty value matching an absent cookie included."""
    broker = _broker()

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(
            "/console/login",
            data={"csrf": csrf, "operator": "", "secret": ADMIN_SECRET},
            headers={"origin": ORIGIN},
        )

    answer = _run(broker, go)
    assert answer.status_code == 403
    assert "stale or came from another site" in answer.text
    assert f"{COOKIE}=" not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "origin",
    [ORIGIN + ".evil.example", ORIGIN + "0", ORIGIN + "/", "http://127.0.0.1", "null"],
)
def test_an_origin_is_the_brokers_own_exactly(origin: str) -> None:
    broker = _broker()

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        form = await client.get("/console/login")
        return await client.post(
            "/console/login",
            data={"csrf": _csrf(form.text), "operator": "", "secret": ADMIN_SECRET},
            headers={"origin": origin},
        )

    answer = _run(broker, go)
    assert answer.status_code == 403
    assert f"{COOKIE}=" not in answer.headers.get("set-cookie", "")
    [event] = [e for e in broker.store.iter_audit() if e.event_type == "console_form_refused"]
    assert "cross_origin" in (event.detail or "")


def test_a_client_whose_address_is_not_an_ip_is_not_taken_for_loopback() -> None:
    """A client address that does not parse (a socket's name, say) says nothing about
    where the browser is: over plain HTTP, refused as one from afar."""
    broker = _broker()
    answer = _run(broker, lambda c: c.get("/console/login"), client=("localhost-ish", 1))
    assert answer.status_code == 403
    assert "Turn TLS on" in answer.text
    assert "tasklease_console_login=" not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "back",
    [
        "//evil.example/",
        "https://evil.example/console/",
        "/elsewhere",
        "/console//evil.example",
        "/console/\\evil.example",
    ],
)
def test_a_revoke_goes_back_only_to_a_console_page(back: str) -> None:
    broker = _broker()

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        signed = await _sign_in(client, "", ADMIN_SECRET)
        assert signed.status_code == 303, signed.text
        home = await client.get("/console/")
        confirm = await client.get(
            "/console/revoke", params={"level": "task", "target": "t-1", "back": back}
        )
        posted = await client.post(
            "/console/revoke",
            data={"csrf": _csrf(home.text), "level": "task", "target": "t-1", "back": back},
            headers={"origin": ORIGIN},
        )
        return confirm, posted

    confirm, posted = _run(broker, go)
    assert confirm.status_code == 200
    assert 'name="back" value="/console/"' in confirm.text
    assert posted.status_code == 303
    assert posted.headers["location"] == "/console/"


def test_the_session_cookie_and_pages_carry_their_flags_and_headers() -> None:
    broker = _broker()

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        login = await client.get("/console/login")
        signed = await client.post(
            "/console/login",
            data={"csrf": _csrf(login.text), "operator": "", "secret": ADMIN_SECRET},
            headers={"origin": ORIGIN},
        )
        return login, signed

    login, signed = _run(broker, go)
    [cookie] = [c for c in signed.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")]
    flags = {flag.strip().lower() for flag in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console"} <= flags
    csp = login.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert login.headers["x-frame-options"] == "DENY"
    assert login.headers["cache-control"] == "no-store"


def test_signing_out_clears_the_cookie_and_a_sessions_cookie_lasts_as_its_token() -> None:
    broker = _broker()

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        signed = await _sign_in(client, "", ADMIN_SECRET)
        assert signed.status_code == 303, signed.text
        home = await client.get("/console/")
        out = await client.post(
            "/console/logout", data={"csrf": _csrf(home.text)}, headers={"origin": ORIGIN}
        )
        return signed, out

    signed, out = _run(broker, go)
    [cookie] = [c for c in signed.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")]
    flags = {flag.strip().lower() for flag in cookie.split(";")[1:]}
    assert f"max-age={broker.config.admin_token_ttl}" in flags
    assert out.status_code == 303
    [cleared] = [c for c in out.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")]
    assert cleared.startswith(f'{COOKIE}="";') or cleared.startswith(f"{COOKIE}=;")
    assert "max-age=0" in cleared.lower()
