# Would fail if: the password of a broker URL's user part (a proxy's HTTP Basic credential
# in front of the broker, which the HTTP client sends from the URL) reached the
# verifier's log when the key set could not be fetched.
"""What a resource server's verifier logs about the broker names no credential: a broker
URL's user and password are sent (HTTP Basic), and shown nowhere."""

from __future__ import annotations

import base64
import logging

import httpx
import pytest
from e2e_support import RunningBroker

from tasklease.verify import Verifier, VerifierUnavailable

pytestmark = pytest.mark.slow

PASSWORD = "proxy-Pa55word-not-for-logs"  # noqa: S105 - the secret that must not leak


def test_a_failed_key_fetch_logs_no_password_of_the_broker_url(
    broker: RunningBroker, caplog: pytest.LogCaptureFixture
) -> None:
    agent = broker.register(["read:data:42"])
    # A path the broker does not serve: its key set answers 404, as a proxy in front of
    # it might answer a 401 or 503.
    host = broker.url.partition("://")[2]
    verifier = Verifier(
        f"http://gateway:{PASSWORD}@{host}/behind-the-proxy", audience="svc-a", feed=False
    )
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(VerifierUnavailable):
            verifier.verify(agent.access_token)
    finally:
        verifier.close()
    said = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "fetching the broker's JWKS failed" in said, said  # the failure is told...
    assert "404" in said, said  # ...with its status
    assert PASSWORD not in said, said
    assert PASSWORD not in caplog.text, caplog.text


def test_the_broker_urls_user_and_password_are_still_sent_as_basic() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503)

    verifier = Verifier(
        f"https://gateway:{PASSWORD}@broker.example/proxied",
        audience="svc-a",
        feed=False,
        transport=httpx.MockTransport(answer),
    )
    try:
        assert not verifier.start()  # the key set answered 503
    finally:
        verifier.close()
    assert seen, "the key set was never fetched"
    basic = base64.b64encode(f"gateway:{PASSWORD}".encode()).decode()
    assert all(r.headers["authorization"] == f"Basic {basic}" for r in seen)
    assert all(str(r.url) == "https://broker.example/proxied/.well-known/jwks.json" for r in seen)
