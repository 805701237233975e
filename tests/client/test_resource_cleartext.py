"""The SDK's ``auth`` objects put no token on a request over plain HTTP beyond loopback
unless the agent (or credential) was made with the opt-in; nor does ``discover`` read a
resource's metadata that way (``rules.cleartext``, decision 151).

A request to a resource server is judged where ``Agent.auth``, ``auth_for``, a delegated
token's ``auth`` and an ``OfflineCredential``'s attach their token: a refused one raises
``InsecureHTTP`` from the request call with nothing sent (not even an exchange or a
renewal at the broker). The broker and the resource servers here are fakes
(``httpx.MockTransport``): what is checked is what the SDK would have sent, and where.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import nacl.signing
import pytest

from tasklease.client import (
    Agent,
    AsyncAgent,
    InsecureHTTP,
    OfflineCredential,
    TaskleaseError,
    adiscover,
    discover,
)
from tasklease.rules import jws
from tasklease.rules.chainverify import derive
from tasklease.rules.cleartext import INSECURE_HTTP_ENV, InsecureHTTPWarning

BROKER = "https://broker.example"
PLAIN = "http://orders.example/v1/orders/42?q=secret-query"
NONCE = "ab" * 32
AGENT_ID = "spiffe://x/agent/o/t/1"
AGENT_TOKEN = "agent.token.1"  # noqa: S105 - a fake token
RESOURCE_TOKEN = "resource.token.1"  # noqa: S105
DELEGATED_TOKEN = "delegated.token.1"  # noqa: S105


@pytest.fixture(autouse=True)
def _no_opt_in_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INSECURE_HTTP_ENV, raising=False)


def _fresh_plain_url(path: str = "/v1/orders/42") -> str:
    """A plain HTTP URL beyond loopback not yet warned about in this process."""
    return f"http://r-{secrets.token_hex(6)}.example:8080{path}"


class FakeBroker:
    """Answers registration, token exchange and delegation; keeps the requests."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        path = request.url.path
        if path == "/v1/challenge":
            return httpx.Response(200, json={"nonce": NONCE, "expires_in": 30})
        if path == "/v1/register":
            body = {"agent_id": AGENT_ID, "access_token": AGENT_TOKEN, "expires_in": 300}
            return httpx.Response(200, json={**body, "token_type": "Bearer"})
        if path == "/v1/oauth/token":
            body = {"access_token": RESOURCE_TOKEN, "expires_in": 300, "token_type": "Bearer"}
            return httpx.Response(200, json=body)
        if path == "/v1/delegate":
            body = {"access_token": DELEGATED_TOKEN, "expires_in": 60, "delegation_chain": []}
            return httpx.Response(200, json=body)
        return httpx.Response(200, json={})

    def paths(self) -> list[str]:
        return [r.url.path for r in self.seen]


class Resource:
    """A resource server that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(200, json={"ok": True})


def _root_chain(holder_key: nacl.signing.SigningKey, delegate_key: nacl.signing.SigningKey) -> str:
    """A DPoP-bound root token of a (fake) broker, attenuated to ``delegate_key``."""
    broker_key = nacl.signing.SigningKey.generate()
    public = bytes(holder_key.verify_key)
    now = int(time.time())
    sub = "spiffe://example.org/agent/o/t/root"
    claims = {
        "iss": "tasklease",
        "sub": sub,
        "aud": ["https://orders.example"],
        "exp": now + 600,
        "nbf": now,
        "iat": now,
        "jti": "a" * 32,
        "scope": "read:orders:42",
        "task_id": "t",
        "orch_id": "o",
        "client_id": sub,
        "oiat": now,
        "rnc": 0,
        "agent_jwk": {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": jws.b64url_encode(public),
            "kid": jws.jwk_thumbprint(public),
        },
        "max_exp": now + 3600,
        "cnf": {"jkt": jws.jwk_thumbprint(public)},
    }
    root = jws.encode(
        json.dumps(claims, separators=(",", ":")).encode(),
        typ="at+jwt",
        kid=jws.jwk_thumbprint(bytes(broker_key.verify_key)),
        key=broker_key,
    )
    return derive(
        root,
        holder_key,
        delegate=f"{sub}/bob",
        delegate_key=bytes(delegate_key.verify_key),
        now=now,
        ttl=300,
    )


# --- the ways to present a token, each: (url, insecure_http) -> the broker's requests ----

Present = Callable[[str, FakeBroker, Resource, bool | None], None]


def _agent(broker: FakeBroker, insecure_http: bool | None) -> Agent:
    return Agent.register(
        BROKER, "f" * 64, "o", "t", ["read:orders:42"], transport=broker.transport,
        insecure_http=insecure_http,
    )  # fmt: skip


async def _async_agent(broker: FakeBroker, insecure_http: bool | None) -> AsyncAgent:
    return await AsyncAgent.register(
        BROKER, "f" * 64, "o", "t", ["read:orders:42"], transport=broker.transport,
        insecure_http=insecure_http,
    )  # fmt: skip


def _get(url: str, resource: Resource, auth: httpx.Auth) -> None:
    with httpx.Client(transport=httpx.MockTransport(resource.answer)) as http:
        http.get(url, auth=auth)


def _aget(url: str, resource: Resource, auth: httpx.Auth) -> Coroutine[Any, Any, None]:
    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(resource.answer)) as http:
            await http.get(url, auth=auth)

    return run()


def _agent_auth(url: str, broker: FakeBroker, resource: Resource, opt: bool | None) -> None:
    _get(url, resource, _agent(broker, opt).auth)


def _agent_auth_for(url: str, broker: FakeBroker, resource: Resource, opt: bool | None) -> None:
    _get(url, resource, _agent(broker, opt).auth_for("https://orders.example"))


def _delegated(url: str, broker: FakeBroker, resource: Resource, opt: bool | None) -> None:
    delegated = _agent(broker, opt).delegate("spiffe://x/agent/o/t/2", ["read:orders:42"])
    _get(url, resource, delegated.delegate("spiffe://x/agent/o/t/3", ["read:orders:42"]).auth)


def _offline(url: str, broker: FakeBroker, resource: Resource, opt: bool | None) -> None:
    holder, bob = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    _get(url, resource, OfflineCredential(_root_chain(holder, bob), bob, insecure_http=opt).auth)


def _async_auth(url: str, broker: FakeBroker, resource: Resource, opt: bool | None) -> None:
    async def run() -> None:
        await _aget(url, resource, (await _async_agent(broker, opt)).auth)

    asyncio.run(run())


def _async_auth_for(url: str, broker: FakeBroker, resource: Resource, opt: bool | None) -> None:
    async def run() -> None:
        agent = await _async_agent(broker, opt)
        await _aget(url, resource, agent.auth_for("https://orders.example"))

    asyncio.run(run())


def _async_delegated(url: str, broker: FakeBroker, resource: Resource, opt: bool | None) -> None:
    async def run() -> None:
        agent = await _async_agent(broker, opt)
        delegated = await agent.delegate("spiffe://x/agent/o/t/2", ["read:orders:42"])
        onward = await delegated.delegate("spiffe://x/agent/o/t/3", ["read:orders:42"])
        await _aget(url, resource, onward.auth)

    asyncio.run(run())


PRESENTERS: dict[str, tuple[Present, str]] = {
    "Agent.auth": (_agent_auth, f"Bearer {AGENT_TOKEN}"),
    "Agent.auth_for": (_agent_auth_for, f"Bearer {RESOURCE_TOKEN}"),
    "DelegatedToken.auth": (_delegated, f"Bearer {DELEGATED_TOKEN}"),
    "OfflineCredential.auth": (_offline, "DPoP tla1~"),
    "AsyncAgent.auth": (_async_auth, f"Bearer {AGENT_TOKEN}"),
    "AsyncAgent.auth_for": (_async_auth_for, f"Bearer {RESOURCE_TOKEN}"),
    "AsyncDelegatedToken.auth": (_async_delegated, f"Bearer {DELEGATED_TOKEN}"),
}
# What reaches the broker before the resource is called: the exchange of auth_for comes
# with the request, and must not happen for a refused one.
BEFORE = ["/v1/challenge", "/v1/register"]


# Would fail if: an auth attached the token to a plain-HTTP request beyond loopback (the
# token crossed the network in clear), or exchanged one for it first.
@pytest.mark.parametrize("kind", sorted(PRESENTERS))
def test_plain_http_beyond_loopback_is_refused_before_anything_is_sent(kind: str) -> None:
    present, _ = PRESENTERS[kind]
    broker, resource = FakeBroker(), Resource()
    with pytest.raises(InsecureHTTP) as refused:
        present(PLAIN, broker, resource, None)
    assert resource.seen == []
    assert "/v1/oauth/token" not in broker.paths()  # no exchange for it either
    error = refused.value
    assert isinstance(error, TaskleaseError) and error.code == "insecure_http"
    assert error.status is None
    message = str(error)
    assert "request URL http://orders.example is plain HTTP to orders.example" in message
    assert "insecure_http=True" in message and f"{INSECURE_HTTP_ENV}=1" in message
    assert "/v1/orders" not in message and "secret-query" not in message
    assert error.hint is not None and "insecure_http=True" in error.hint


@pytest.mark.parametrize(
    "url",
    [
        "https://orders.example/v1/orders/42",
        "http://127.0.0.1:8080/v1/orders/42",
        "http://localhost/v1/orders/42",
        "http://[::1]:8080/v1/orders/42",
    ],
)
@pytest.mark.parametrize("kind", sorted(PRESENTERS))
def test_https_and_loopback_get_the_token(kind: str, url: str) -> None:
    present, header = PRESENTERS[kind]
    broker, resource = FakeBroker(), Resource()
    present(url, broker, resource, None)  # no warning: the suite makes warnings errors
    assert len(resource.seen) == 1
    assert resource.seen[0].headers["authorization"].startswith(header)


@pytest.mark.parametrize("kind", sorted(PRESENTERS))
def test_the_opt_in_of_the_agent_allows_it_and_warns_once_per_server(kind: str) -> None:
    present, header = PRESENTERS[kind]
    url, broker, resource = _fresh_plain_url(), FakeBroker(), Resource()
    origin = url.removesuffix("/v1/orders/42")
    with pytest.warns(InsecureHTTPWarning, match=f"credentials go to {origin} over plain HTTP"):
        present(url, broker, resource, True)
    assert resource.seen[0].headers["authorization"].startswith(header)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # another path of the same server: no second one
        present(origin + "/v1/orders/43", FakeBroker(), resource, True)
    assert len(resource.seen) == 2


@pytest.mark.parametrize("kind", sorted(PRESENTERS))
def test_the_environment_decides_when_the_agent_did_not_say(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    present, header = PRESENTERS[kind]
    monkeypatch.setenv(INSECURE_HTTP_ENV, "1")
    url, resource = _fresh_plain_url(), Resource()
    with pytest.warns(InsecureHTTPWarning, match=f"{INSECURE_HTTP_ENV}=1"):
        present(url, FakeBroker(), resource, None)
    assert resource.seen[0].headers["authorization"].startswith(header)
    with pytest.raises(InsecureHTTP):  # the agent's False wins over the environment
        present(_fresh_plain_url(), FakeBroker(), resource, False)
    assert len(resource.seen) == 1


def test_a_typo_in_the_environment_refuses_rather_than_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(INSECURE_HTTP_ENV, "ture")
    resource = Resource()
    with pytest.raises(InsecureHTTP, match=f"{INSECURE_HTTP_ENV} must be 1 or 0"):
        _agent_auth(_fresh_plain_url(), FakeBroker(), resource, None)
    assert resource.seen == []


def test_no_renewal_is_made_for_a_refused_request() -> None:
    """A token due for renewal is not renewed for a request that will not be sent."""
    broker, resource = FakeBroker(), Resource()
    agent = Agent.register(
        BROKER, "f" * 64, "o", "t", ["read:orders:42"], transport=broker.transport,
        renew_margin=600,  # always due
    )  # fmt: skip
    with pytest.raises(InsecureHTTP):
        _get(PLAIN, resource, agent.auth)
    assert broker.paths() == BEFORE and resource.seen == []


def test_the_warning_names_the_line_that_made_the_request() -> None:
    url, broker, resource = _fresh_plain_url(), FakeBroker(), Resource()
    auth = _agent(broker, True).auth
    with (
        httpx.Client(transport=httpx.MockTransport(resource.answer)) as http,
        pytest.warns(InsecureHTTPWarning) as caught,
    ):
        http.get(url, auth=auth)
    assert caught[0].filename == __file__


def test_the_async_warning_names_the_line_that_made_the_request() -> None:
    url, broker, resource = _fresh_plain_url(), FakeBroker(), Resource()

    async def run() -> list[warnings.WarningMessage]:
        auth = (await _async_agent(broker, True)).auth
        async with httpx.AsyncClient(transport=httpx.MockTransport(resource.answer)) as http:
            with pytest.warns(InsecureHTTPWarning) as caught:
                await http.get(url, auth=auth)
        return list(caught)

    assert asyncio.run(run())[0].filename == __file__


def test_an_httpx2_client_is_refused_too() -> None:
    """The auths are also ``httpx2.Auth`` (the ``mcp`` package's client): the same rule."""
    httpx2 = pytest.importorskip("httpx2")
    broker, seen = FakeBroker(), []
    agent = _agent(broker, None)

    def answer(request: Any) -> Any:
        seen.append(request)
        return httpx2.Response(200)

    with httpx2.Client(transport=httpx2.MockTransport(answer)) as http:
        with pytest.raises(InsecureHTTP):
            http.get(PLAIN, auth=agent.auth_for("https://orders.example"))
        assert seen == [] and "/v1/oauth/token" not in broker.paths()
        http.get("https://orders.example/x", auth=agent.auth_for("https://orders.example"))
    assert seen[0].headers["authorization"] == f"Bearer {RESOURCE_TOKEN}"


# --- discover ---------------------------------------------------------------------------


class Metadata:
    """A resource server's and a broker's metadata documents."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.seen: list[str] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        if request.url.path.startswith("/.well-known/oauth-protected-resource"):
            body = {"resource": self.resource, "authorization_servers": [BROKER]}
            return httpx.Response(200, json=body)
        meta = {"issuer": BROKER, "token_endpoint": f"{BROKER}/v1/oauth/token"}
        return httpx.Response(200, json=meta)


def _discover(resource: str, *, asynchronous: bool, **options: Any) -> tuple[Metadata, Any]:
    served = Metadata(resource)
    if asynchronous:
        found = asyncio.run(
            adiscover(resource, transport=httpx.MockTransport(served.answer), **options)
        )
    else:
        found = discover(resource, transport=httpx.MockTransport(served.answer), **options)
    return served, found


# Would fail if: discover read a resource's metadata over plain HTTP beyond loopback,
# letting anyone on the path choose the authorization servers the agent trusts.
@pytest.mark.parametrize("asynchronous", [False, True])
def test_discover_refuses_plain_http_metadata_beyond_loopback(asynchronous: bool) -> None:
    served = Metadata("http://tools.example/mcp")
    with pytest.raises(InsecureHTTP) as refused:
        if asynchronous:
            asyncio.run(
                adiscover("http://tools.example/mcp", transport=httpx.MockTransport(served.answer))
            )
        else:
            discover("http://tools.example/mcp", transport=httpx.MockTransport(served.answer))
    assert served.seen == []
    assert "resource metadata URL http://tools.example is plain HTTP" in str(refused.value)
    assert "authorization servers" in str(refused.value)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_discover_refuses_a_plain_http_metadata_url_named_for_an_https_resource(
    asynchronous: bool,
) -> None:
    """The URL fetched is judged: a ``WWW-Authenticate`` may name a plain one."""
    metadata_url = "http://tools.example/.well-known/oauth-protected-resource/mcp"
    with pytest.raises(InsecureHTTP):
        _discover("https://tools.example/mcp", asynchronous=asynchronous, metadata_url=metadata_url)


@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize(
    "resource", ["https://tools.example/mcp", "http://127.0.0.1:8080/mcp", "http://localhost/mcp"]
)
def test_discover_reads_https_and_loopback_metadata(resource: str, asynchronous: bool) -> None:
    served, found = _discover(resource, asynchronous=asynchronous)
    assert found.resource == resource
    assert [s.issuer for s in found.authorization_servers] == [BROKER]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_discover_opts_in_and_warns(asynchronous: bool) -> None:
    resource = _fresh_plain_url("/mcp")
    origin = resource.removesuffix("/mcp")
    with pytest.warns(InsecureHTTPWarning, match=f"resource metadata comes from {origin} "):
        served, found = _discover(resource, asynchronous=asynchronous, insecure_http=True)
    assert served.seen[0].startswith(origin + "/.well-known/oauth-protected-resource")
    assert found.resource == resource


def test_discover_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INSECURE_HTTP_ENV, "1")
    with pytest.warns(InsecureHTTPWarning, match=f"{INSECURE_HTTP_ENV}=1"):
        _discover(_fresh_plain_url("/mcp"), asynchronous=False)
    with pytest.raises(InsecureHTTP):
        _discover(_fresh_plain_url("/mcp"), asynchronous=False, insecure_http=False)


def test_an_https_request_is_passed_without_parsing_its_url_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check runs on every request an ``auth`` is given: an ``https`` request (the
    common case) is decided by its scheme alone, with no URL parsed again nor the rule's
    work done; a plain HTTP one still goes through the rule."""
    from tasklease.client import _brokerurl

    judged: list[str] = []

    def rule(url: httpx.URL, **_: Any) -> None:
        judged.append(str(url))

    monkeypatch.setattr(_brokerurl, "check_credential_url", rule)
    monkeypatch.setattr(_brokerurl.httpx, "URL", _refusing_url_parse)
    _brokerurl.check_request_url(httpx.Request("GET", "https://orders.example/x").url, None)
    _brokerurl.check_request_url(httpx.Request("GET", "HTTPS://orders.example/x").url, None)
    assert judged == []
    monkeypatch.undo()
    monkeypatch.setattr(_brokerurl, "check_credential_url", rule)
    _brokerurl.check_request_url(httpx.Request("GET", PLAIN).url, None)
    assert judged == ["http://orders.example/"]


def _refusing_url_parse(*args: Any, **kwargs: Any) -> httpx.URL:
    raise AssertionError("an https request's URL was parsed again")
