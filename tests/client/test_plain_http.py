"""The SDK sends no credential over plain HTTP beyond loopback unless asked (decision 151).

Every entry point that takes a broker URL and will send a secret or a token refuses
``http://`` to a host that is not loopback before any request; ``https://`` and loopback
need nothing; ``insecure_http=True`` or ``TASKLEASE_INSECURE_HTTP=1`` opts in, with one
:class:`InsecureHTTPWarning` per URL. The brokers here are fakes (``httpx.MockTransport``):
what is checked is what the SDK would have sent, and where.
"""

from __future__ import annotations

import asyncio
import secrets
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import nacl.signing
import pytest

from tasklease.client import AdminClient, Agent, AppClient, AsyncAgent, OfflineReporter
from tasklease.core.config import is_loopback_host as config_is_loopback_host
from tasklease.rules.cleartext import (
    INSECURE_HTTP_ENV,
    InsecureHTTPWarning,
    is_loopback_host,
    may_carry_credentials,
)
from tasklease.verify import AppCredentials, Verifier

PLAIN = "http://broker.example"
NONCE = "ab" * 32
SCOPE = ["read:data:1"]


@pytest.fixture(autouse=True)
def _no_opt_in_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INSECURE_HTTP_ENV, raising=False)


def _fresh_plain_url() -> str:
    """A plain HTTP URL beyond loopback not yet warned about in this process (the warning
    comes once per URL)."""
    return f"http://b-{secrets.token_hex(6)}.example:8080"


class FakeBroker:
    """Answers every call the SDK makes on its way to a registered agent, and keeps the
    requests."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        path = "/v1/" + request.url.path.partition("/v1/")[2]  # a tenant's too
        if path in ("/v1/oauth/token", "/v1/admin/auth"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        if path == "/v1/app/launch-tokens":
            return httpx.Response(201, json={"launch_token": "f" * 64, "expires_at": "x"})
        if path == "/v1/challenge":
            return httpx.Response(200, json={"nonce": NONCE, "expires_in": 30})
        if path in ("/v1/register", "/v1/resume"):
            body = {"agent_id": "spiffe://x/agent/o/t/1", "access_token": "a.b.c"}
            return httpx.Response(200, json={**body, "expires_in": 300, "token_type": "Bearer"})
        return httpx.Response(200, json={})


def _register(url: str, broker: FakeBroker, **options: Any) -> Agent:
    return Agent.register(url, "f" * 64, "o", "t", SCOPE, transport=broker.transport, **options)


def _admin(url: str, broker: FakeBroker, **options: Any) -> AdminClient:
    return AdminClient(url, "an-admin-secret", transport=broker.transport, **options)


def _app(url: str, broker: FakeBroker, **options: Any) -> AppClient:
    return AppClient(url, "app", "an-app-secret", transport=broker.transport, **options)


def _report(url: str, broker: FakeBroker, **options: Any) -> None:
    client = httpx.Client(transport=broker.transport)
    OfflineReporter(client, url, lambda r: r, **options)
    client.post(url + "/v1/audit/offline")  # what its flush sends, and where


ENTRY_POINTS: dict[str, Callable[[str, FakeBroker], object]] = {
    "AdminClient": lambda url, broker: _admin(url, broker).sign_in(),
    "AppClient": lambda url, broker: _app(url, broker).app_token(),
    "Agent.register": _register,
    "Agent.resume": lambda url, broker: Agent.resume(
        url,
        "spiffe://x/agent/o/t/1",
        nacl.signing.SigningKey.generate(),
        transport=broker.transport,
    ),
    "AsyncAgent.register": lambda url, broker: asyncio.run(
        AsyncAgent.register(url, "f" * 64, "o", "t", SCOPE, transport=broker.transport)
    ),
    "AsyncAgent.resume": lambda url, broker: asyncio.run(
        AsyncAgent.resume(
            url,
            "spiffe://x/agent/o/t/1",
            nacl.signing.SigningKey.generate(),
            transport=broker.transport,
        )
    ),
    "OfflineReporter": lambda url, broker: _report(url, broker),
    "Verifier with credentials": lambda url, broker: Verifier(
        url,
        audience="svc",
        credentials=AppCredentials("app", "an-app-secret"),
        transport=broker.transport,
    ),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_plain_http_beyond_loopback_is_refused_before_any_request(entry: str) -> None:
    broker = FakeBroker()
    with pytest.raises(ValueError, match="plain HTTP to broker.example") as refused:
        ENTRY_POINTS[entry](PLAIN + "/t/acme", broker)
    assert broker.seen == []
    message = str(refused.value)
    assert "insecure_http=True" in message and f"{INSECURE_HTTP_ENV}=1" in message
    assert "https://" in message


def test_the_refusal_never_repeats_a_password_or_a_query() -> None:
    with pytest.raises(ValueError) as refused:
        _admin("http://user:hunter2@broker.example/?token=abc", FakeBroker())
    assert "hunter2" not in str(refused.value) and "abc" not in str(refused.value)
    assert "http://broker.example " in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://broker.example",
        "HTTPS://broker.example:8443/t/acme",
        "http://127.0.0.1:8080",
        "http://127.9.8.7",
        "http://localhost:8080",
        "http://LOCALHOST",
        "http://[::1]:8080",
    ],
)
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_https_and_loopback_need_no_opt_in(url: str, entry: str) -> None:
    broker = FakeBroker()
    ENTRY_POINTS[entry](url, broker)  # and no warning: the suite turns warnings into errors
    assert broker.seen or entry.startswith("Verifier")  # the verifier is not started


@pytest.mark.parametrize(
    "url", ["http://0.0.0.0:8080", "http://127.1", "http://localhost.", "http://a.localhost"]
)
def test_what_is_not_plainly_loopback_is_not(url: str) -> None:
    with pytest.raises(ValueError, match="plain HTTP"):
        _admin(url, FakeBroker())


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_insecure_http_opts_in_and_warns_once_per_url(entry: str) -> None:
    url, broker = _fresh_plain_url(), FakeBroker()
    with pytest.warns(InsecureHTTPWarning, match=f"credentials go to {url} over plain HTTP"):
        _opted_in(entry, url, broker)
    if not entry.startswith("Verifier"):  # it makes no request before start()
        assert broker.seen and {r.url.host for r in broker.seen} == {httpx.URL(url).host}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _opted_in(entry, url, FakeBroker())  # the same URL again: no second warning


def _opted_in(entry: str, url: str, broker: FakeBroker) -> None:
    """``entry`` with ``insecure_http=True``."""
    if entry == "AdminClient":
        _admin(url, broker, insecure_http=True).sign_in()
    elif entry == "AppClient":
        _app(url, broker, insecure_http=True).app_token()
    elif entry == "Agent.register":
        _register(url, broker, insecure_http=True)
    elif entry == "Agent.resume":
        key = nacl.signing.SigningKey.generate()
        Agent.resume(url, "a", key, transport=broker.transport, insecure_http=True)
    elif entry == "AsyncAgent.register":
        registered = AsyncAgent.register(
            url, "f" * 64, "o", "t", SCOPE, transport=broker.transport, insecure_http=True
        )
        asyncio.run(registered)
    elif entry == "AsyncAgent.resume":
        key = nacl.signing.SigningKey.generate()
        resumed = AsyncAgent.resume(url, "a", key, transport=broker.transport, insecure_http=True)
        asyncio.run(resumed)
    elif entry == "OfflineReporter":
        _report(url, broker, insecure_http=True)
    else:
        credentials = AppCredentials("app", "an-app-secret")
        Verifier(
            url,
            audience="svc",
            credentials=credentials,
            transport=broker.transport,
            insecure_http=True,
        )


def test_the_warning_names_the_line_that_built_the_client() -> None:
    url = _fresh_plain_url()
    with pytest.warns(InsecureHTTPWarning) as caught:
        AdminClient(url, "an-admin-secret", insecure_http=True)
    assert caught[0].filename == __file__


def test_an_app_passes_its_opt_in_to_the_agents_it_creates() -> None:
    url, broker = _fresh_plain_url(), FakeBroker()
    with pytest.warns(InsecureHTTPWarning):
        app = _app(url, broker, insecure_http=True)
    with app.create_agent("o", "t", SCOPE) as agent:
        assert agent.token == "a.b.c"
    assert [r.url.path for r in broker.seen][:4] == [
        "/v1/oauth/token",
        "/v1/app/launch-tokens",
        "/v1/challenge",
        "/v1/register",
    ]


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_the_environment_opts_in_when_the_caller_does_not_say(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(INSECURE_HTTP_ENV, value)
    url, broker = _fresh_plain_url(), FakeBroker()
    with pytest.warns(InsecureHTTPWarning, match=f"{INSECURE_HTTP_ENV}={value.lower()}"):
        _register(url, broker)
    assert broker.seen
    with pytest.raises(ValueError, match="plain HTTP"):  # the caller's False wins
        _register(_fresh_plain_url(), broker, insecure_http=False)


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off"])
def test_the_environment_says_no(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INSECURE_HTTP_ENV, value)
    with pytest.raises(ValueError, match="plain HTTP"):
        _app(PLAIN, FakeBroker())


def test_a_misspelt_environment_decides_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INSECURE_HTTP_ENV, "ture")
    with pytest.raises(ValueError, match=f"{INSECURE_HTTP_ENV} must be 1 or 0"):
        _app(PLAIN, FakeBroker())
    _app("https://broker.example", FakeBroker())  # read only where it would decide


def test_a_client_of_ones_own_is_judged_by_where_it_sends() -> None:
    broker = FakeBroker()
    # A relative URL goes to the client's base URL (httpx merges them): that is judged.
    plain = httpx.Client(base_url=PLAIN, transport=broker.transport)
    with pytest.raises(ValueError, match="plain HTTP to broker.example"):
        OfflineReporter(plain, "", lambda r: r)
    tls = httpx.Client(base_url="https://broker.example", transport=broker.transport)
    OfflineReporter(tls, "", lambda r: r)
    # An absolute broker URL is where the requests go, whatever the client's base URL.
    local = httpx.Client(base_url="http://127.0.0.1:8080", transport=broker.transport)
    with pytest.raises(ValueError, match="plain HTTP to broker.example"):
        Agent.register(PLAIN, "f" * 64, "o", "t", SCOPE, client=local)
    with pytest.raises(ValueError, match="plain HTTP to broker.example"):
        OfflineReporter(local, PLAIN, lambda r: r)
    assert broker.seen == []
    Agent.register("https://broker.example", "f" * 64, "o", "t", SCOPE, client=local).close()
    assert {r.url.host for r in broker.seen} == {"broker.example"}


def test_a_verifier_without_credentials_takes_no_keys_over_plain_http() -> None:
    # Would fail if: a verifier with no credentials took its key set from a plain-HTTP
    # broker beyond loopback, where anyone on the path can replace the keys and have
    # tokens of their own making accepted (nothing secret is sent, but what it trusts is
    # received).
    with pytest.raises(ValueError, match="signing keys fetched from it") as refused:
        Verifier(PLAIN, audience="svc", feed=False, transport=FakeBroker().transport)
    assert "insecure_http=True" in str(refused.value)
    url = _fresh_plain_url()
    with pytest.warns(InsecureHTTPWarning, match=f"signing keys come from {url}"):
        Verifier(url, audience="svc", feed=False, transport=FakeBroker().transport,
                 insecure_http=True)  # fmt: skip


def test_one_loopback_rule_for_the_broker_the_cli_and_the_sdk() -> None:
    assert config_is_loopback_host is is_loopback_host
    assert may_carry_credentials("https", "broker.example")
    assert may_carry_credentials("HTTP", "127.0.0.1") and may_carry_credentials("http", "::1")
    assert not may_carry_credentials("http", "broker.example")
    assert not may_carry_credentials("ftp", "127.0.0.1")
