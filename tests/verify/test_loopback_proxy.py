"""The verifier reaches a loopback broker directly, never through a proxy the environment
names (HTTP_PROXY, ALL_PROXY): its requests carry its app credentials (the sign-in), the
app token (introspection, the feed) and fetch the keys that decide which tokens are
trusted, in clear for ``http://127.0.0.1``. Proxies for other hosts are still used.

Over loopback HTTP, against a fake broker and a fake proxy (uvicorn in threads,
answers_support) that record what they were asked.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable, Iterator

import nacl.signing
import pytest
from answers_support import Answer, FakeServer, serving

from tasklease.rules import jws
from tasklease.rules.cleartext import InsecureHTTPWarning
from tasklease.verify import (
    AppCredentials,
    InvalidToken,
    KeySetStale,
    VerificationError,
    Verifier,
)

REFERENCE = "tlr_" + "a" * 43
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
SECRET = "s" * 40


@pytest.fixture(scope="module")
def broker_server() -> Iterator[FakeServer]:
    with serving() as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy_server() -> Iterator[FakeServer]:
    with serving() as proxy:
        yield proxy


@pytest.fixture
def servers(broker_server: FakeServer, proxy_server: FakeServer) -> tuple[FakeServer, FakeServer]:
    broker_server.reset()
    proxy_server.reset()
    return broker_server, proxy_server


def _proxy_environment(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def _signed(kid: str) -> str:
    """A token signed by a key the broker's key set does not hold (its kid is unknown)."""
    claims = json.dumps({"iss": "tasklease", "aud": "svc-a"}).encode()
    return jws.encode(claims, typ="at+jwt", kid=kid, key=nacl.signing.SigningKey.generate())


def _jwks() -> bytes:
    public = bytes(nacl.signing.SigningKey.generate().verify_key)
    kid = jws.jwk_thumbprint(public)
    key = {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": jws.b64url_encode(public)}
    return json.dumps({"keys": [key]}).encode()


SIGNED_IN = Answer(body=b'{"access_token": "app-token", "expires_in": 600}')
INACTIVE = Answer(body=b'{"active": false}')


def _verifier(url: str) -> Verifier:
    return Verifier(
        url,
        audience="svc-a",
        credentials=AppCredentials("app-1", SECRET),
        feed=False,
        report_uses=False,
        timeout=10,
    )


def _verify(verifier: Verifier, token: str) -> VerificationError | None:
    try:
        verifier.verify(token)
    except VerificationError as exc:
        return exc
    return None


def _averify(verifier: Verifier, token: str) -> VerificationError | None:
    """:func:`_verify` with ``averify``: the path of the ASGI middleware and of MCP."""

    async def check() -> VerificationError | None:
        try:
            await verifier.averify(token)
        except VerificationError as exc:
            return exc
        return None

    return asyncio.run(check())


# Would fail if: the verifier's client followed a proxy the environment names (without a
# NO_PROXY for loopback) to a loopback broker: the proxy would see the app's secret in
# the sign-in, the app token in the introspection, and could answer the key set.
@pytest.mark.parametrize("entry", [_verify, _averify], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("variable", "host"),
    [("http_proxy", "127.0.0.1"), ("all_proxy", "127.0.0.1"), ("http_proxy", "localhost")],
)
def test_a_loopback_broker_is_never_reached_through_a_proxy_from_the_environment(
    servers: tuple[FakeServer, FakeServer],
    monkeypatch: pytest.MonkeyPatch,
    entry: Callable[[Verifier, str], VerificationError | None],
    variable: str,
    host: str,
) -> None:
    broker, proxy = servers
    _proxy_environment(monkeypatch, **{variable: proxy.url})
    verifier = _verifier(broker.url.replace("127.0.0.1", host))
    try:
        broker.answer(Answer(body=_jwks()))
        unknown = entry(verifier, _signed("k" * 43))  # the keys are fetched
        fetched = len(broker.paths)
        broker.answer(SIGNED_IN, INACTIVE)
        inactive = entry(verifier, REFERENCE)  # a sign-in, then an introspection
    finally:
        verifier.close()
    assert proxy.paths == []
    assert fetched and broker.paths[:fetched] == ["/.well-known/jwks.json"] * fetched
    assert broker.paths[fetched:] == ["/v1/app/auth", "/v1/introspect"]
    assert broker.asked[-1].authorization == "Bearer app-token"
    assert isinstance(unknown, InvalidToken) and unknown.reason == "unknown kid"
    assert isinstance(inactive, InvalidToken) and "not active" in inactive.reason


def test_a_proxy_from_the_environment_is_still_used_for_another_host(
    servers: tuple[FakeServer, FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Would fail if: routing loopback directly dropped the environment's proxies for every
    # other host. The broker is beyond loopback: only the proxy answers.
    _, proxy = servers
    _proxy_environment(monkeypatch, http_proxy=proxy.url)
    proxy.answer(Answer(status=503))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureHTTPWarning)
        verifier = Verifier(
            "http://broker.invalid:9",
            audience="svc-a",
            feed=False,
            report_uses=False,
            timeout=10,
            insecure_http=True,
        )
    try:
        refused = _verify(verifier, _signed("k" * 43))
    finally:
        verifier.close()
    assert proxy.paths == ["/.well-known/jwks.json"]
    assert isinstance(refused, KeySetStale)  # no fetch ever succeeded: nothing vouches
