"""The console's guards, in process over the app's ASGI interface (no browser): a page
needs the scope of the API route it mirrors, the sign-in form needs its double-submit
cookie, the Origin must be exactly the broker's own, a client whose address is not an IP
is not taken for loopback, ``back`` never leaves the console, and the session cookie and
the pages carry their flags and headers."""

from __future__ import annotations

import httpx
import pytest
from tests.console.console_support import (
    ADMIN_SECRET,
    COOKIE,
    CTX,
    DENIAL,
    ORIGIN,
    form_csrf,
    in_process_broker,
    run,
    sign_in,
)

from tasklease.core.broker import Broker


def _auditor(broker: Broker) -> str:
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    _, secret = broker.add_operator(admin, name="audrey", role="auditor", public_key=None, ctx=CTX)
    return secret


def test_an_auditors_session_is_refused_the_app_registry() -> None:
    """The apps page mirrors the app registry's route (``admin:launch-tokens:*``): an
    auditor's session opens the pages every role reads, and not that one."""
    broker = in_process_broker()
    secret = _auditor(broker)

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        signed = await sign_in(client, "audrey", secret)
        assert signed.status_code == 303, signed.text
        return await client.get("/console/agents"), await client.get("/console/apps")

    agents, apps = run(broker, go)
    assert agents.status_code == 200
    assert apps.status_code == 403
    assert DENIAL.search(apps.text) is not None


def test_an_auditors_revoke_form_is_refused_and_revokes_nothing() -> None:
    broker = in_process_broker()
    secret = _auditor(broker)

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        signed = await sign_in(client, "audrey", secret)
        assert signed.status_code == 303, signed.text
        home = await client.get("/console/")
        posted = await client.post(
            "/console/revoke",
            data={"csrf": form_csrf(home.text), "level": "task", "target": "t-1"},
            headers={"origin": ORIGIN},
        )
        shown = await client.get("/console/revoke", params={"level": "task", "target": "t-1"})
        return posted, shown

    posted, shown = run(broker, go)
    assert posted.status_code == 403 and shown.status_code == 403
    assert broker.inventory.revocations(limit=10).items == []


@pytest.mark.parametrize("csrf", ["", "anything"], ids=["empty", "guessed"])
def test_a_sign_in_without_its_forms_cookie_is_refused(csrf: str) -> None:
    """The double submit: a sign-in posted without the cookie the sign-in page set is
    refused, an empty value matching an absent cookie included."""
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(
            "/console/login",
            data={"csrf": csrf, "operator": "", "secret": ADMIN_SECRET},
            headers={"origin": ORIGIN},
        )

    answer = run(broker, go)
    assert answer.status_code == 403
    assert "stale or came from another site" in answer.text
    assert f"{COOKIE}=" not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "origin",
    [ORIGIN + ".evil.example", ORIGIN + "0", ORIGIN + "/", "http://127.0.0.1", "null"],
)
def test_an_origin_is_the_brokers_own_exactly(origin: str) -> None:
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await sign_in(client, origin=origin)

    answer = run(broker, go)
    assert answer.status_code == 403
    assert f"{COOKIE}=" not in answer.headers.get("set-cookie", "")
    [event] = [e for e in broker.store.iter_audit() if e.event_type == "console_form_refused"]
    assert "cross_origin" in (event.detail or "")


def test_a_client_whose_address_is_not_an_ip_is_not_taken_for_loopback() -> None:
    """A client address that does not parse (a socket's name, say) says nothing about
    where the browser is: over plain HTTP, refused as one from afar."""
    broker = in_process_broker()
    answer = run(broker, lambda c: c.get("/console/login"), client=("localhost-ish", 1))
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
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        signed = await sign_in(client, "", ADMIN_SECRET)
        assert signed.status_code == 303, signed.text
        home = await client.get("/console/")
        confirm = await client.get(
            "/console/revoke", params={"level": "task", "target": "t-1", "back": back}
        )
        posted = await client.post(
            "/console/revoke",
            data={"csrf": form_csrf(home.text), "level": "task", "target": "t-1", "back": back},
            headers={"origin": ORIGIN},
        )
        return confirm, posted

    confirm, posted = run(broker, go)
    assert confirm.status_code == 200
    assert 'name="back" value="/console/"' in confirm.text
    assert posted.status_code == 303
    assert posted.headers["location"] == "/console/"


def test_the_session_cookie_and_pages_carry_their_flags_and_headers() -> None:
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        login = await client.get("/console/login")
        signed = await client.post(
            "/console/login",
            data={"csrf": form_csrf(login.text), "operator": "", "secret": ADMIN_SECRET},
            headers={"origin": ORIGIN},
        )
        return login, signed

    login, signed = run(broker, go)
    [cookie] = [c for c in signed.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")]
    flags = {flag.strip().lower() for flag in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console"} <= flags
    csp = login.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert login.headers["x-frame-options"] == "DENY"
    assert login.headers["cache-control"] == "no-store"


def test_signing_out_clears_the_cookie_and_a_sessions_cookie_lasts_as_its_token() -> None:
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        signed = await sign_in(client, "", ADMIN_SECRET)
        assert signed.status_code == 303, signed.text
        home = await client.get("/console/")
        out = await client.post(
            "/console/logout", data={"csrf": form_csrf(home.text)}, headers={"origin": ORIGIN}
        )
        return signed, out

    signed, out = run(broker, go)
    [cookie] = [c for c in signed.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")]
    flags = {flag.strip().lower() for flag in cookie.split(";")[1:]}
    assert f"max-age={broker.config.admin_token_ttl}" in flags
    assert out.status_code == 303
    [cleared] = [c for c in out.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")]
    assert cleared.startswith(f'{COOKIE}="";') or cleared.startswith(f"{COOKIE}=;")
    assert "max-age=0" in cleared.lower()


@pytest.mark.parametrize(
    ("level", "target", "said"),
    [
        ("bogus", "x", "invalid revocation level: bogus"),
        ("", "x", "level and target are required"),
        ("task", "", "level and target are required"),
        ("token", "a" * 20 + ".b.c", "target must be a token id (jti), not a token"),
    ],
    ids=["unknown-level", "no-level", "no-target", "a-token"],
)
def test_a_revoke_confirmation_refuses_as_the_revocation_would(
    level: str, target: str, said: str
) -> None:
    """The confirmation page checks what it is asked to confirm by the revocation's own
    rule, message included: an unknown level used to be told "level and target are
    required", though both were there."""
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        signed = await sign_in(client, "", ADMIN_SECRET)
        assert signed.status_code == 303, signed.text
        home = await client.get("/console/")
        confirm = await client.get("/console/revoke", params={"level": level, "target": target})
        posted = await client.post(
            "/console/revoke",
            data={"csrf": form_csrf(home.text), "level": level, "target": target},
            headers={"origin": ORIGIN},
        )
        return confirm, posted

    confirm, posted = run(broker, go)
    for answer in (confirm, posted):
        assert answer.status_code == 400, answer.text
        assert said in answer.text, answer.text
    assert broker.inventory.revocations(limit=10).items == []
