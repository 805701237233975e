"""The console's refusals name their audit event (docs/console.md, "Refused pages"): a
failed sign-in, a session the broker no longer takes and a form from another origin or
without its page's CSRF value each answer with the ``denial_id`` of exactly one audit
event, as the API's problem bodies do. In process, over the app's ASGI interface (no
browser)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

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
from tasklease.core.errors import Unavailable
from tasklease.core.records import AuditEvent
from tasklease.storage import MemoryStore

ELSEWHERE = "https://elsewhere.example"
# A token of the right shape that no key of this broker signed.
FORGED_SESSION = "eyJhbGciOiJFZERTQSJ9.e30.AAAA"


def _events(broker: Broker) -> list[AuditEvent]:
    return list(broker.store.iter_audit())


def _named(broker: Broker, denial_id: str) -> list[AuditEvent]:
    """The audit events whose detail ends with ``denial_id``."""
    return [e for e in _events(broker) if (e.detail or "").endswith(f"denial={denial_id}")]


def _shown(text: str) -> str:
    """The one denial id an answer names (it may name it more than once)."""
    found: set[str] = set(DENIAL.findall(text))
    assert len(found) == 1, text[:2000]
    return found.pop()


async def _signed_in(client: httpx.AsyncClient) -> str:
    """Sign in with the admin secret; the CSRF value of the console's forms."""
    signed = await sign_in(client)
    assert signed.status_code == 303, signed.text
    home = await client.get("/console/")
    assert home.status_code == 200, home.text
    return form_csrf(home.text)


# -- F1: a failed sign-in -----------------------------------------------------------------


@pytest.mark.parametrize("operator", ["", "nobody"], ids=["admin-secret", "unknown-operator"])
def test_a_failed_sign_in_names_its_one_audit_event(operator: str) -> None:
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        form = await client.get("/console/login")
        return await client.post(
            "/console/login",
            data={
                "csrf": form_csrf(form.text),
                "operator": operator,
                "secret": "wrong-" + "x" * 30,
            },
            headers={"origin": ORIGIN},
        )

    page = run(broker, go)
    assert page.status_code == 401
    # One message, whichever of the two was wrong.
    assert "Sign-in failed: check the operator name and secret." in page.text
    denial_id = _shown(page.text)
    [event] = _named(broker, denial_id)
    assert event.outcome == "denied"
    assert event.event_type in ("admin_auth_failed", "operator_auth_failed")


# -- F2: a session the broker refuses -----------------------------------------------------


def test_a_fragment_of_a_dead_session_names_the_refusal_of_its_token() -> None:
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        client.cookies.set("tasklease_console", FORGED_SESSION)
        return await client.get("/console/live/agents", headers={"x-console-fragment": "1"})

    answer = run(broker, go)
    assert answer.status_code == 401
    assert answer.text.startswith("session ended")
    [event] = _named(broker, _shown(answer.text))
    assert (event.event_type, event.outcome) == ("token_auth_failed", "denied")


def test_a_page_of_a_dead_session_sends_the_refusal_on_to_the_sign_in_page() -> None:
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        client.cookies.set("tasklease_console", FORGED_SESSION)
        sent = await client.get("/console/agents")
        assert sent.status_code == 303, sent.text
        return sent, await client.get(sent.headers["location"])

    sent, login = run(broker, go)
    denial_id = _shown(sent.headers["location"])
    assert sent.headers["location"] == f"/console/login?denial={denial_id}"
    assert login.status_code == 200
    assert _shown(login.text) == denial_id
    [event] = _named(broker, denial_id)
    assert (event.event_type, event.outcome) == ("token_auth_failed", "denied")


@pytest.mark.parametrize(
    "value",
    ["den_0123456789abcdeg", "den_0123456789abcdef0", "<b>den_0123456789abcdef</b>", "x"],
)
def test_the_sign_in_page_shows_only_a_denial_ids_exact_shape(value: str) -> None:
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/console/login", params={"denial": value})

    login = run(broker, go)
    assert login.status_code == 200
    assert DENIAL.search(login.text) is None
    assert "<b>" not in login.text


def test_no_session_at_all_is_sent_to_sign_in_without_a_refusal() -> None:
    broker = in_process_broker()
    before = len(_events(broker))
    sent = run(broker, lambda client: client.get("/console/agents"))
    assert sent.status_code == 303 and sent.headers["location"] == "/console/login"
    assert len(_events(broker)) == before


# -- F3: forms from another origin or without their page's CSRF value --------------------


def _revoke(csrf: str | None, origin: str) -> Callable[[httpx.AsyncClient], Awaitable[Any]]:
    async def go(client: httpx.AsyncClient) -> httpx.Response:
        fresh = await _signed_in(client)
        return await client.post(
            "/console/revoke",
            data={"csrf": fresh if csrf is None else csrf, "level": "task", "target": "t-1"},
            headers={"origin": origin},
        )

    return go


def _login(csrf: str | None, origin: str) -> Callable[[httpx.AsyncClient], Awaitable[Any]]:
    async def go(client: httpx.AsyncClient) -> httpx.Response:
        form = await client.get("/console/login")
        fresh = form_csrf(form.text)
        return await client.post(
            "/console/login",
            data={"csrf": fresh if csrf is None else csrf, "secret": ADMIN_SECRET},
            headers={"origin": origin},
        )

    return go


def _logout(csrf: str | None, origin: str) -> Callable[[httpx.AsyncClient], Awaitable[Any]]:
    async def go(client: httpx.AsyncClient) -> httpx.Response:
        fresh = await _signed_in(client)
        return await client.post(
            "/console/logout",
            data={"csrf": fresh if csrf is None else csrf},
            headers={"origin": origin},
        )

    return go


@pytest.mark.parametrize(
    ("form", "csrf", "origin", "reason", "operator"),
    [
        (_revoke, "forged", ORIGIN, "stale_form", "admin"),
        (_revoke, None, ELSEWHERE, "cross_origin", ""),
        (_login, "forged", ORIGIN, "stale_form", ""),
        (_login, None, ELSEWHERE, "cross_origin", ""),
        (_logout, "forged", ORIGIN, "stale_form", ""),
        (_logout, None, ELSEWHERE, "cross_origin", ""),
    ],
    ids=[
        "revoke-stale",
        "revoke-cross-origin",
        "login-stale",
        "login-cross-origin",
        "logout-stale",
        "logout-cross-origin",
    ],
)
def test_a_refused_form_is_audited_once_and_names_its_refusal(
    form: Callable[[str | None, str], Callable[[httpx.AsyncClient], Awaitable[Any]]],
    csrf: str | None,
    origin: str,
    reason: str,
    operator: str,
) -> None:
    broker = in_process_broker()
    answer = run(broker, form(csrf, origin))
    assert answer.status_code == 403
    assert "stale or came from another site" in answer.text
    denial_id = _shown(answer.text)
    [event] = _named(broker, denial_id)
    assert (event.event_type, event.outcome) == ("console_form_refused", "denied")
    assert f"console form refused: {reason} | origin={origin} from 127.0.0.1" in event.detail
    assert event.agent_id == operator
    assert event.resource.startswith("/console/")
    # Refused before it acted: nothing revoked, no one signed in or out after it.
    assert _events(broker)[-1] == event
    assert "tasklease_console=" not in answer.headers.get("set-cookie", "")


def test_another_sites_forged_revoke_without_the_session_cookie_is_audited() -> None:
    """What a browser sends for another site's form: its Origin, and no session cookie
    (SameSite=Strict). Refused and audited before any session is read."""
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(
            "/console/revoke",
            data={"csrf": "guess", "level": "task", "target": "t-1"},
            headers={"origin": ELSEWHERE},
        )

    answer = run(broker, go)
    assert answer.status_code == 403
    [event] = _named(broker, _shown(answer.text))
    assert event.event_type == "console_form_refused"
    assert "cross_origin" in event.detail
    assert _events(broker) == [event]


def test_refused_forms_spend_the_clients_refusal_budget() -> None:
    """A forger cannot fill the audit log: each refused form spends one of the client's
    refusal budget, and once it is spent the console answers 429 before any work, the
    run under one ``refusals_rate_limited`` event."""
    burst = 3
    broker = in_process_broker(refusal_burst=burst, refusal_rate=0.001)
    tries = 10

    async def go(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.post(
                "/console/login", data={"csrf": "x", "secret": "y"}, headers={"origin": ELSEWHERE}
            )
            for _ in range(tries)
        ]

    answers = run(broker, go)
    statuses = [a.status_code for a in answers]
    assert statuses == [403] * burst + [429] * (tries - burst), statuses
    kinds = [e.event_type for e in _events(broker)]
    assert kinds.count("console_form_refused") == burst
    assert kinds.count("refusals_rate_limited") == 1
    limited = {a.json()["denial_id"] for a in answers[burst:]}
    [limiting] = [e for e in _events(broker) if e.event_type == "refusals_rate_limited"]
    assert limited == {_shown(limiting.detail)}


# -- plain HTTP beyond loopback -------------------------------------------------------------


def _from_afar(broker: Broker, go: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """``go`` from a client beyond loopback, over plain HTTP."""
    return run(broker, go, client=("192.0.2.10", 40000))


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/console/login"), ("POST", "/console/revoke"), ("GET", "/console/login")],
    ids=["sign-in", "revoke", "sign-in-page"],
)
def test_a_console_request_over_plain_http_from_afar_is_audited_once(
    method: str, path: str
) -> None:
    """The secret of a sign-in posted over plain HTTP crossed the network in clear:
    refused, and the refusal is one event the page names, as every refusal is."""
    broker = in_process_broker()
    data = {"csrf": "x", "operator": "", "secret": ADMIN_SECRET, "level": "task", "target": "t"}

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        if method == "GET":
            return await client.get(path)
        return await client.post(path, data=data, headers={"origin": ORIGIN})

    answer = _from_afar(broker, go)
    assert answer.status_code == 403
    assert "Turn TLS on" in answer.text
    [event] = _named(broker, _shown(answer.text))
    assert (event.event_type, event.outcome) == ("console_form_refused", "denied")
    assert "console form refused: plain_http" in event.detail
    assert "from 192.0.2.10" in event.detail and event.resource == path
    assert _events(broker) == [event]  # refused before anything else: no sign-in
    assert ADMIN_SECRET not in event.detail


def test_a_sign_out_over_plain_http_from_afar_ends_the_session() -> None:
    """The one console form served over plain HTTP beyond loopback: its cookie has just
    crossed the network in clear, so refusing it would keep alive a session anyone on
    the path could copy; served, it revokes the session's token."""
    broker = in_process_broker()

    async def signed_in(client: httpx.AsyncClient) -> tuple[str, str]:
        assert (await sign_in(client)).status_code == 303
        home = await client.get("/console/")
        return client.cookies[COOKIE], form_csrf(home.text)

    token, csrf = run(broker, signed_in)

    async def sign_out(client: httpx.AsyncClient) -> httpx.Response:
        client.cookies.set(COOKIE, token)
        return await client.post("/console/logout", data={"csrf": csrf}, headers={"origin": ORIGIN})

    out = _from_afar(broker, sign_out)
    assert out.status_code == 303, out.text

    async def copied(client: httpx.AsyncClient) -> httpx.Response:
        client.cookies.set(COOKIE, token)
        return await client.get("/console/")

    again = run(broker, copied)  # the copy no longer opens the console, even from here
    assert again.status_code == 303 and "denial=den_" in again.headers["location"]


# -- behind a proxy on this machine -------------------------------------------------------
# A broker bound to loopback behind a proxy of its own machine needs no trusted_proxies to
# be reached, and without them every browser is a loopback client over plain HTTP: the
# client address and the scheme no longer say where the browser is. Its Origin does.
PUBLIC_TLS = "https://broker.example.com"
PUBLIC_CLEAR = "http://broker.example.com"


def _sign_in_through_a_local_proxy(origin: str) -> tuple[Broker, httpx.Response]:
    """The admin's sign-in from a page at ``origin`` (the broker's ``public_url``), relayed
    by a proxy on the broker's machine: plain HTTP from 127.0.0.1."""
    broker = in_process_broker(public_url=(origin,))

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await sign_in(client, origin=origin)

    return broker, run(broker, go)


def _session_cookie(answer: httpx.Response) -> str:
    [cookie] = [c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")]
    return cookie


def test_a_session_reached_over_tls_through_a_local_proxy_gets_a_secure_cookie() -> None:
    """The browser is on an https page: its session cookie must never be sent in clear
    (to the same host's plain-HTTP port, say), though the proxy spoke plain HTTP."""
    _, answer = _sign_in_through_a_local_proxy(PUBLIC_TLS)
    assert answer.status_code == 303, answer.text
    flags = [flag.strip().lower() for flag in _session_cookie(answer).split(";")[1:]]
    assert "secure" in flags
    assert "httponly" in flags and "samesite=strict" in flags


def test_a_plain_http_page_beyond_loopback_is_refused_behind_a_local_proxy() -> None:
    """The browser is on a plain-HTTP page of a host beyond loopback: its secret crossed a
    network in clear, and a session cookie would cross it at every page. Refused as a
    request from afar over plain HTTP is, though it arrived from 127.0.0.1."""
    broker, answer = _sign_in_through_a_local_proxy(PUBLIC_CLEAR)
    assert answer.status_code == 403
    assert "Turn TLS on" in answer.text
    assert not [c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")]
    [event] = _named(broker, _shown(answer.text))
    assert (event.event_type, event.outcome) == ("console_form_refused", "denied")
    assert f"console form refused: plain_http | origin={PUBLIC_CLEAR}" in event.detail
    assert _events(broker) == [event]  # refused before anything else: no sign-in


# -- a sign-in while the store is out --------------------------------------------------------

_CAUSE = "connection to server at 10.9.8.7 failed"


class _OutStore(MemoryStore):
    """A memory store whose reads of operators, or whose writes, fail as a database that
    cannot be reached does (``Unavailable``, the cause in its ``reason``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads_out = False
        self.writes_out = False

    def _out(self) -> Unavailable:
        return Unavailable("the database connection was lost", reason=_CAUSE, retry_after=2)

    def get_operator(self, name: str) -> Any:
        if self.reads_out:
            raise self._out()
        return super().get_operator(name)

    @contextmanager
    def write(self) -> Iterator[Any]:
        if self.writes_out:
            raise self._out()
        with super().write() as tx:
            yield tx


def _sign_in_with(store: MemoryStore, operator: str) -> tuple[Broker, httpx.Response]:
    broker = in_process_broker(store)

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await sign_in(client, operator)

    return broker, run(broker, go)


def test_a_sign_in_while_the_store_cannot_be_read_answers_unavailable_and_names_it() -> None:
    """Not 401 "check the operator name and secret": the operator would believe the
    secret wrong. 503, come back shortly, the refusal named, and the cause kept off
    the page (it is in the audit event)."""
    store = _OutStore()
    store.reads_out = True
    broker, answer = _sign_in_with(store, "alice")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "2"
    assert "check the operator name and secret" not in answer.text
    assert "unavailable" in answer.text
    assert _CAUSE not in answer.text and "database" not in answer.text
    [event] = _named(broker, _shown(answer.text))
    assert (event.event_type, event.outcome) == ("operator_auth_failed", "denied")
    # The store could not say whether an operator has the name typed: not kept (a
    # secret typed in the name field would be, for every auditor to read).
    assert "unavailable" in event.detail and "operator=<unknown>" in event.detail
    assert "alice" not in event.detail
    assert "tasklease_console=" not in answer.headers.get("set-cookie", "")


def test_a_sign_in_while_the_store_cannot_be_written_answers_unavailable() -> None:
    """The admin secret verified, but its sign-in's event cannot be written: no token,
    503, and nothing that says the secret was wrong (no event could name it)."""
    store = _OutStore()
    store.writes_out = True
    broker, answer = _sign_in_with(store, "")
    assert answer.status_code == 503
    assert "check the operator name and secret" not in answer.text
    assert "unavailable" in answer.text
    assert _CAUSE not in answer.text and "database" not in answer.text
    assert DENIAL.search(answer.text) is None  # nothing could be written to name
    assert "tasklease_console=" not in answer.headers.get("set-cookie", "")
    assert list(broker.store.iter_audit()) == []


def test_a_sign_in_moments_after_the_operators_rotation_says_when_to_come_back() -> None:
    """The new secret is right, but a token issued now would be born revoked by the
    rotation's entry: 503 with Retry-After and the refusal named, not "check the secret"."""
    broker = in_process_broker()
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    broker.add_operator(admin, name="alice", role="operator", public_key=None, ctx=CTX)
    _, secret = broker.rotate_operator(admin, "alice", public_key=None, ctx=CTX)

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await sign_in(client, "alice", secret)

    answer = run(broker, go)
    assert answer.status_code == 503
    assert int(answer.headers["retry-after"]) > 0
    assert "check the operator name and secret" not in answer.text
    [event] = _named(broker, _shown(answer.text))
    assert event.event_type == "operator_auth_failed"


@pytest.mark.parametrize(
    ("operator", "secret"),
    [("Not A Name", ADMIN_SECRET), ("x" * 300, ADMIN_SECRET), ("", ""), ("alice", "")],
    ids=["malformed-name", "long-name", "admin-no-secret", "operator-no-secret"],
)
def test_a_sign_in_refused_for_its_form_names_its_one_audit_event(
    operator: str, secret: str
) -> None:
    """A name no operator can have, or no secret: refused as a wrong one is (one message,
    401), and audited as one is, its page naming the event."""
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        form = await client.get("/console/login")
        return await client.post(
            "/console/login",
            data={"csrf": form_csrf(form.text), "operator": operator, "secret": secret},
            headers={"origin": ORIGIN},
        )

    page = run(broker, go)
    assert page.status_code == 401
    assert "Sign-in failed: check the operator name and secret." in page.text
    [event] = _named(broker, _shown(page.text))
    assert event.outcome == "denied"
    assert event.event_type == ("operator_auth_failed" if operator else "admin_auth_failed")
    assert ADMIN_SECRET not in event.detail and len(event.detail) < 600


# -- every 401 carries a challenge (RFC 9110 section 11.6.1) -------------------------------

CHALLENGE = (
    'Cookie realm="tasklease console", form-action="/console/login", '
    'cookie-name="tasklease_console"'
)


def test_every_console_401_names_the_console_sign_in_as_its_challenge() -> None:
    """A 401 must carry ``WWW-Authenticate``: the console's (a failed sign-in, a part of a
    page whose session ended) name its form sign-in and session cookie, a scheme no
    browser prompts for, so the page and its script behave as before."""
    broker = in_process_broker()

    async def go(client: httpx.AsyncClient) -> list[httpx.Response]:
        form = await client.get("/console/login")
        wrong = await client.post(
            "/console/login",
            data={"csrf": form_csrf(form.text), "operator": "", "secret": "wrong-" + "x" * 30},
            headers={"origin": ORIGIN},
        )
        malformed = await client.post(
            "/console/login",
            data={"csrf": form_csrf(form.text), "operator": "Not A Name", "secret": "x"},
            headers={"origin": ORIGIN},
        )
        client.cookies.set(COOKIE, FORGED_SESSION)
        fragment = await client.get("/console/live/agents", headers={"x-console-fragment": "1"})
        client.cookies.delete(COOKIE)
        none = await client.get("/console/live/overview", headers={"x-console-fragment": "1"})
        return [form, wrong, malformed, fragment, none]

    form, *refused = run(broker, go)
    for answer in refused:
        assert answer.status_code == 401, answer.text
        assert answer.headers.get_list("www-authenticate") == [CHALLENGE], answer.headers
    assert "www-authenticate" not in form.headers
