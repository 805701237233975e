"""The SDK's clients that trust the default CA bundle share one TLS context per process;
a client certificate never goes into it."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
from tests.federation.bundle_support import make_ca

from tasklease.bounds import DeadlineTransport
from tasklease.client import AdminClient, AppClient
from tasklease.client._bounded import BoundedTransport
from tasklease.client._holder import default_ssl_context, ssl_context
from tasklease.client._transport import http_client

URL = "http://127.0.0.1:9"  # never reached: nothing here sends a request


def _context_of(client: httpx.Client) -> ssl.SSLContext:
    # Where httpx keeps the context its connections are made with, behind the SDK's bound
    # and its deadline.
    transport = client._transport
    assert isinstance(transport, BoundedTransport)
    assert isinstance(transport.inner, DeadlineTransport)
    context: ssl.SSLContext = transport.inner.inner._pool._ssl_context  # type: ignore[attr-defined]
    return context


def test_every_client_trusting_the_default_bundle_shares_one_context() -> None:
    shared = default_ssl_context()
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    assert ssl_context(None, True) is shared
    agent_client, owned = http_client(None, None, 5.0, None, True)
    admin = AdminClient(URL, admin_secret="s" * 32)
    app = AppClient(URL, "client-1", client_secret="s" * 32)
    try:
        assert owned
        assert _context_of(agent_client) is shared
        assert _context_of(admin._client) is shared
        assert _context_of(app._client) is shared
    finally:
        agent_client.close()
        admin.close()
        app.close()


def test_a_client_certificate_gets_a_context_of_its_own(tmp_path: Path) -> None:
    shared = default_ssl_context()
    mine = ssl_context(make_ca(tmp_path).server("agent.example"), True)
    assert isinstance(mine, ssl.SSLContext) and mine is not shared
    assert ssl_context(None, True) is shared


def test_a_context_or_no_verification_asked_for_is_used_as_given() -> None:
    given = ssl.create_default_context()
    assert ssl_context(None, given) is given
    assert ssl_context(None, False) is False


def test_a_client_certificate_does_not_turn_server_verification_off(tmp_path: Path) -> None:
    # Would fail if: presenting a certificate (mTLS) with verify=True built a context
    # that trusts any server, or checked no host name.
    ca = make_ca(tmp_path)
    mine = ssl_context(ca.server("agent.example"), True)
    assert isinstance(mine, ssl.SSLContext)
    assert mine.verify_mode == ssl.CERT_REQUIRED and mine.check_hostname
    unverified = ssl_context(ca.server("agent.example"), False)
    assert isinstance(unverified, ssl.SSLContext)
    assert unverified.verify_mode == ssl.CERT_NONE and not unverified.check_hostname
