"""Every request of the verifier but its feed's stream ends within a few timeouts
(bounds.with_deadlines), and nobody waits for a key fetch longer than one: httpx's own
timeouts bound each read, not a request, and a broker (or a path to it) that drips an
answer a byte at a time would otherwise hold the key set's lock, and every verification
of a token with an unknown kid (anyone can send one) behind it, for as long as it likes.

Over loopback HTTP, against a fake broker (uvicorn in a thread, answers_support) that
drips its answers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import nacl.signing
import pytest
from answers_support import Answer, FakeServer, serving

from tasklease.bounds import NO_DEADLINE, with_deadlines
from tasklease.client._bounded import bounded_async_client, bounded_client
from tasklease.rules import jws
from tasklease.verify import AppCredentials, VerificationError, Verifier, VerifierUnavailable
from tasklease.verify._grants import count_call

TIMEOUT = 0.2  # a request ends within 3 of them: 0.6 s
# A byte every 0.05 s for 5 s: each read well within the timeout, the whole far past it.
DRIP = Answer(body=b" ", chunks=100, pause=0.05)
SIGNED_IN = Answer(body=b'{"access_token": "app-token", "expires_in": 600}')


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with serving() as fake:
        yield fake


@pytest.fixture
def broker(server: FakeServer) -> FakeServer:
    server.reset()
    return server


def _verifier(url: str) -> Verifier:
    return Verifier(
        url,
        audience="svc-a",
        credentials=AppCredentials("app-1", "s" * 40),
        feed=False,
        report_uses=False,
        timeout=TIMEOUT,
    )


def _unknown_kid_token() -> str:
    claims = json.dumps({"iss": "tasklease", "aud": "svc-a"}).encode()
    key = nacl.signing.SigningKey.generate()
    return jws.encode(claims, typ="at+jwt", kid="k" * 43, key=key)


# Would fail if: the verifier's JWKS fetch kept only httpx's per-read timeouts (the drip
# held the fetch, and the key set's lock, for 5 s), or callers finding a fetch under way
# waited for it to end whatever it took.
def test_a_dripped_jwks_holds_no_verification_past_its_deadline(broker: FakeServer) -> None:
    broker.answer(DRIP)
    verifier = _verifier(broker.url)
    token = _unknown_kid_token()
    took: list[float] = []
    refused: list[bool] = []

    def verify() -> None:
        started = time.monotonic()
        try:
            verifier.verify(token)
            refused.append(False)
        except VerificationError:
            refused.append(True)
        took.append(time.monotonic() - started)

    threads = [threading.Thread(target=verify) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(8)
    finally:
        verifier.close()
    assert refused == [True] * 4
    assert max(took) < 3 * TIMEOUT + 0.6, took  # the fetch: its deadline, and one read
    assert sorted(took)[2] < TIMEOUT + 0.3, took  # the waiters: one timeout at most


# Would fail if: an introspection (a by-reference token) kept only per-read timeouts.
def test_a_dripped_introspection_is_unavailable_by_its_deadline(broker: FakeServer) -> None:
    broker.answer(SIGNED_IN, DRIP)
    verifier = _verifier(broker.url)
    started = time.monotonic()
    try:
        with pytest.raises(VerificationError):
            verifier.verify("tlr_" + "a" * 43)
    finally:
        verifier.close()
    assert time.monotonic() - started < 3 * TIMEOUT + 0.6
    assert broker.paths == ["/v1/app/auth", "/v1/introspect"]


def _client(url: str, *, timeout: float = TIMEOUT, deadline: float = 3 * TIMEOUT) -> httpx.Client:
    return with_deadlines(httpx.Client(base_url=url, timeout=timeout), deadline)


# Would fail if: a counted call (every use of a counted grant) kept only per-read timeouts.
def test_a_dripped_count_is_unavailable_by_its_deadline(broker: FakeServer) -> None:
    broker.answer(DRIP)
    started = time.monotonic()
    with _client(broker.url) as client, pytest.raises(VerifierUnavailable):
        count_call(client, "t", "payment", audience="svc-a", presented=None, call={})
    assert time.monotonic() - started < 3 * TIMEOUT + 0.6


# Would fail if: the deadline closed the client, or applied to a request sent with
# NO_DEADLINE (the feed's stream, which never ends by design), or to the next request
# on the same connection.
def test_a_request_without_deadline_outlives_it_on_the_same_client(broker: FakeServer) -> None:
    broker.answer(Answer(body=b" ", chunks=6, pause=0.1))  # 0.6 s, a read every 0.1 s
    with _client(broker.url, timeout=1.0, deadline=0.3) as client:
        with pytest.raises(httpx.TimeoutException):
            client.get("/dripped")
        with client.stream("GET", "/feed", extensions={NO_DEADLINE: True}) as response:
            assert response.read() == b" " * 6
        broker.answer(Answer(body=b"{}"))
        assert client.get("/after").json() == {}


# Would fail if: the SDK's clients kept only per-read timeouts (an agent's or an app's
# call to a broker that drips its answer would wait for as long as it drips).
def test_the_sdk_s_calls_end_by_their_deadline(broker: FakeServer) -> None:
    broker.answer(DRIP)
    started = time.monotonic()
    with bounded_client(timeout=TIMEOUT) as client, pytest.raises(httpx.TimeoutException):
        client.get(f"{broker.url}/v1/token")
    assert time.monotonic() - started < 3 * TIMEOUT + 0.6

    async def ask() -> None:
        async with bounded_async_client(timeout=TIMEOUT) as client:
            await client.get(f"{broker.url}/v1/token")

    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        asyncio.run(ask())
    assert time.monotonic() - started < 3 * TIMEOUT + 0.6


def test_no_operation_starts_once_a_requests_deadline_has_passed() -> None:
    """A read, write or connect begun after the deadline fails as a timeout of its kind,
    never with a negative timeout handed to the socket; before it, it gets what is left."""
    import httpcore

    from tasklease.bounds import _ends_at, _left

    assert _left(5.0, httpcore.ReadTimeout) == 5.0  # no request under way: as asked
    token = _ends_at.set(time.monotonic() - 0.001)
    try:
        with pytest.raises(httpcore.ReadTimeout, match="deadline passed"):
            _left(5.0, httpcore.ReadTimeout)
        with pytest.raises(httpcore.ConnectTimeout):
            _left(None, httpcore.ConnectTimeout)
    finally:
        _ends_at.reset(token)
    token = _ends_at.set(time.monotonic() + 2.0)
    try:
        left = _left(5.0, httpcore.ReadTimeout)
        assert left is not None and 0 < left <= 2.0
        assert _left(0.5, httpcore.ReadTimeout) == 0.5
    finally:
        _ends_at.reset(token)
