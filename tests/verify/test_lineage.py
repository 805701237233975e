"""Lineage: a token dies with any ancestor its ``lineage`` lists, at the verifier too."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from tasklease.core.clock import ManualClock
from tasklease.core.keys import KeyRing
from tasklease.core.tokens import KIND_AGENT, mint
from tasklease.verify import InvalidToken, Verifier

IAT = 1_800_000_000
PARENT_JTI = "p" * 32


def _token(ring: KeyRing, jti: str, lineage: tuple[str, ...]) -> str:
    token, _ = mint(
        ring,
        kind=KIND_AGENT,
        iss="tasklease",
        sub=f"spiffe://tasklease.local/agent/o/t/{jti[:16]}",
        aud=("svc-a",),
        iat=IAT,
        ttl=60,
        scope=("read:data:1",),
        client_id="c",
        jti=jti,
        lineage=lineage,
        max_exp=IAT + 600,
    )
    return token


def _broker(ring: KeyRing, entries: list[dict[str, Any]]) -> httpx.MockTransport:
    """The broker's JWKS and a revocation stream that sends ``entries``, then ``sync``."""
    events = "".join(f"event: revocation\ndata: {json.dumps(e)}\n\n" for e in entries)
    cursor = max((e["seq"] for e in entries), default=0)
    stream = events + f"event: sync\ndata: {json.dumps({'cursor': cursor})}\n\n"

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/jwks.json":
            return httpx.Response(200, json=ring.jwks())
        if request.url.path == "/v1/revocations/stream":
            return httpx.Response(
                200, content=stream.encode(), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(404)

    return httpx.MockTransport(answer)


def test_a_chain_revocation_of_a_lineage_ancestor_reaches_the_verifier() -> None:
    ring = KeyRing.generate()
    child = _token(ring, "c" * 32, ("app:app-1", "g" * 32, PARENT_JTI))
    cousin = _token(ring, "d" * 32, ("app:app-1", "h" * 32, "q" * 32))
    entry = {
        "level": "chain",
        "target": PARENT_JTI,
        "revoked_at": IAT - 100,  # lineage entries match whenever the token was issued
        "expires_at": IAT + 3600.0,
        "seq": 7,
    }
    verifier = Verifier(
        "https://broker.invalid",
        audience="svc-a",
        credentials=lambda: "feed-token",
        clock=ManualClock(IAT + 1),
        transport=_broker(ring, [entry]),
    )
    try:
        assert verifier.start(wait=10)
        assert verifier.stats()["feed_cursor"] == 7
        with pytest.raises(InvalidToken) as refused:
            verifier.verify(child)
        assert refused.value.reason == "token has been revoked (level chain)"
        assert verifier.verify(cousin).lineage == ("app:app-1", "h" * 32, "q" * 32)
    finally:
        verifier.close()


def test_without_the_revocation_the_same_token_is_accepted() -> None:
    ring = KeyRing.generate()
    child = _token(ring, "c" * 32, ("app:app-1", "g" * 32, PARENT_JTI))
    verifier = Verifier(
        "https://broker.invalid",
        audience="svc-a",
        credentials=lambda: "feed-token",
        clock=ManualClock(IAT + 1),
        transport=_broker(ring, []),
    )
    try:
        assert verifier.start(wait=10)
        verified = verifier.verify(child)
        assert verified.lineage == ("app:app-1", "g" * 32, PARENT_JTI)
        assert verified.claims["max_exp"] == IAT + 600
    finally:
        verifier.close()


def test_exp_leeway_keeps_revocations_as_long_as_it_accepts_tokens() -> None:
    """An entry expires when nothing it matches is valid without leeway; a verifier that
    accepts tokens exp_leeway seconds longer must keep its entries that much longer."""
    ring = KeyRing.generate()
    token = _token(ring, "c" * 32, ())
    entry = {
        "level": "token",
        "target": "c" * 32,
        "revoked_at": IAT,
        "expires_at": IAT + 60.0,  # the token's exp
        "seq": 1,
    }
    first, later = _broker(ring, [entry]), _broker(ring, [])
    streams: list[int] = []
    pruned_twice = threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/revocations/stream":
            streams.append(1)
            if len(streams) >= 3:  # housekeeping ran after each earlier connection
                pruned_twice.set()
            if len(streams) > 1:
                return later.handle_request(request)
        return first.handle_request(request)

    verifier = Verifier(
        "https://broker.invalid",
        audience="svc-a",
        credentials=lambda: "feed-token",
        clock=ManualClock(IAT + 65),  # past exp, within the leeway
        exp_leeway=10,
        transport=httpx.MockTransport(answer),
    )
    try:
        assert verifier.start(wait=10)
        assert pruned_twice.wait(10)
        assert verifier.stats()["revocation_entries"] == 1
        with pytest.raises(InvalidToken) as refused:
            verifier.verify(token)
        assert refused.value.reason == "token has been revoked (level token)"
    finally:
        verifier.close()


def test_exp_leeway_is_bounded() -> None:
    for leeway in (-1, 301):
        with pytest.raises(ValueError, match="exp_leeway"):
            Verifier("https://broker.invalid", audience="svc-a", feed=False, exp_leeway=leeway)
