"""Checks the Verifier makes at every use, in process (keys served from memory, clock
injected): a feed that has never proved current refuses before anything is accepted or
introspected, and a remembered token stops verifying once its key leaves the key set,
on the sync and the async path alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from tasklease.core.keys import KeyRing
from tasklease.core.tokens import KIND_AGENT
from tasklease.verify import AppCredentials, InvalidToken, RevocationStateStale, Verifier

NOW = 1_800_000_000


class _Clock:
    def now(self) -> float:
        return NOW + 1.0


def _token(ring: KeyRing, jti: str = "j" * 32) -> str:
    claims = {
        "iss": "tasklease",
        "sub": "spiffe://t/agent/o/t/i",
        "aud": ["svc-a"],
        "exp": NOW + 60,
        "nbf": NOW,
        "iat": NOW,
        "jti": jti,
        "scope": ["read:data:1"],
        "client_id": "c",
    }
    return ring.sign(json.dumps(claims).encode(), KIND_AGENT)


class _Introspector:
    """Answers every by-reference token as active, and remembers it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def introspect(self, token: str) -> Mapping[str, Any] | None:
        self.asked.append(token)
        return {
            "active": True,
            "iss": "tasklease",
            "sub": "spiffe://t/agent/o/t/i",
            "aud": ["svc-a"],
            "exp": NOW + 60,
            "iat": NOW,
            "nbf": NOW,
            "jti": "r" * 32,
            "scope": "read:data:1",
            "client_id": "c",
        }


def test_a_feed_that_never_synced_refuses_tokens_and_references_before_introspecting() -> None:
    ring = KeyRing.generate()
    paths: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json=ring.jwks())

    introspector = _Introspector()
    verifier = Verifier(
        "https://broker.invalid",
        audience="svc-a",
        credentials=AppCredentials("app", "secret"),
        clock=_Clock(),
        transport=httpx.MockTransport(answer),
        introspector=introspector,
    )  # never started: its feed has never proved current
    token = _token(ring)
    with pytest.raises(RevocationStateStale):
        verifier.verify(token)
    with pytest.raises(RevocationStateStale):
        verifier.verify("tlr_" + "a" * 43)
    assert introspector.asked == []  # refused before the broker was asked about it
    assert "/v1/revocations/stream" not in paths
    # The same token is good: without a feed there is no revocation state to be stale.
    keys_only = Verifier(
        "https://broker.invalid",
        audience="svc-a",
        feed=False,
        clock=_Clock(),
        transport=httpx.MockTransport(answer),
    )
    assert keys_only.verify(token).jti == "j" * 32


def _rotating(ring: KeyRing) -> tuple[Verifier, list[dict[str, Any]]]:
    """A verifier that fetches the key set at every use (no ttl, no rate limit)."""
    served = [ring.jwks()]
    verifier = Verifier(
        "https://broker.invalid",
        audience="svc-a",
        feed=False,
        jwks_ttl=0,
        jwks_min_refresh_interval=0,
        clock=_Clock(),
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=served[0])),
    )
    return verifier, served


def test_a_remembered_token_is_refused_once_its_key_leaves_the_key_set() -> None:
    ring = KeyRing.generate()
    verifier, served = _rotating(ring)
    token = _token(ring)
    assert verifier.verify(token).jti == "j" * 32
    assert verifier.stats()["cached_tokens"] == 1
    served[0] = KeyRing.generate().jwks()  # the broker removed the key
    with pytest.raises(InvalidToken):
        verifier.verify(token)
    assert verifier.stats()["cached_tokens"] == 0


def test_the_async_path_refreshes_a_due_key_set_and_drops_a_removed_key() -> None:
    ring = KeyRing.generate()
    verifier, served = _rotating(ring)
    token = _token(ring)
    assert asyncio.run(verifier.averify(token)).jti == "j" * 32
    served[0] = KeyRing.generate().jwks()
    with pytest.raises(InvalidToken):
        asyncio.run(verifier.averify(token))
    with pytest.raises(InvalidToken):  # nor a token it never saw, signed by that key
        asyncio.run(verifier.averify(_token(ring, jti="k" * 32)))


def test_an_unbound_token_presented_under_the_dpop_scheme_is_refused() -> None:
    ring = KeyRing.generate()
    verifier, _ = _rotating(ring)
    token = _token(ring)
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token, scheme="DPoP", dpop_proof="x", htm="GET", htu="https://rs/x")
    assert caught.value.reason == "DPoP scheme used with a token not bound to a DPoP key"
    assert verifier.verify(token).jti == "j" * 32  # the same token, as the bearer it is
