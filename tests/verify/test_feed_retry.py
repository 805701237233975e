"""When the verifier tries the revocation feed again (docs/decisions.md 148).

It used to try again every 250 ms after any failure, a 429 included, and each attempt a
broker refuses is an audited refusal: a verifier past its reader's stream cap (decision
140) wrote four ``feed_stream_denied`` events a second for as long as it ran. Now a 429
or a 503 is tried again no sooner than its ``Retry-After``, error answers in a row back
off, a dropped connection is still tried again at once, and a verifier still within its
staleness bound tries once more before the bound is passed, whatever the broker asked.
Real brokers (``tasklease serve``) over loopback HTTP, and a follower given made-up
answers; the rule itself in ``test_feed_retry_rule.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from e2e_support import SHARED_ENV, RunningBroker, jwt_parts, launch_broker, stop_broker
from verify_support import poll

from tasklease.verify import AppCredentials, Verifier
from tasklease.verify._feed import FeedFollower
from tasklease.verify._revocations import RevocationIndex

STREAM = "/v1/revocations/stream"
ONE_STREAM = {**SHARED_ENV, "TASKLEASE_FEED_STREAMS_PER_READER": "1"}


def _denied(broker: RunningBroker, app: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``feed_stream_denied`` events of ``app``'s reader (the broker is shared by the
    tests of this module, each with its own app, so each reader's cap is its own)."""
    resp = broker.get(
        "/v1/audit/events",
        params={"event_type": "feed_stream_denied"},
        headers=broker.admin_headers(),
    )
    assert resp.status_code == 200, resp.text
    events: list[dict[str, Any]] = resp.json()["events"]
    return [event for event in events if event["agent_id"] == f"app:{app['app_id']}"]


@pytest.fixture(scope="module")
def one_stream_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker on which a reader holds one revocation stream at most (shared: each test
    reads the feed as an app of its own)."""
    running = launch_broker(tmp_path_factory.mktemp("one-stream"), ONE_STREAM)
    yield running
    stop_broker(running)


@pytest.fixture
def verifiers() -> Iterator[Callable[..., Verifier]]:
    made: list[Verifier] = []

    def make(url: str, **options: Any) -> Verifier:
        verifier = Verifier(url, audience="svc-a", report_uses=False, **options)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        verifier.close()


# --- against a broker --------------------------------------------------------------------


@pytest.mark.slow
def test_a_verifier_past_its_readers_cap_waits_for_retry_after(
    one_stream_broker: RunningBroker, verifiers: Callable[..., Verifier]
) -> None:
    broker = one_stream_broker
    app = broker.create_app(["read:data:*"])
    credentials = AppCredentials(app["client_id"], app["client_secret"])
    first = verifiers(broker.url, credentials=credentials)
    assert first.start(wait=10)
    assert _denied(broker, app) == []

    # A second verifier with the same app's credentials: its reader holds its one stream.
    second = verifiers(broker.url, credentials=credentials)
    assert not second.start(wait=0)
    poll(lambda: len(_denied(broker, app)) >= 1, timeout=10)
    time.sleep(7.0)
    # Retry-After: 5 (and a backoff after that), not every 250 ms: 28 refusals before.
    denied = _denied(broker, app)
    assert 1 <= len(denied) <= 2, [e["timestamp"] for e in denied]
    assert second.stats()["feed_connections"] == 0 and not second.ready
    assert first.ready and first.stats()["feed_connections"] == 1


@pytest.mark.slow
def test_a_verifier_within_its_bound_tries_again_before_the_bound_is_passed(
    one_stream_broker: RunningBroker, verifiers: Callable[..., Verifier]
) -> None:
    """Refused with ``Retry-After: 5`` one or two seconds into a 6 s bound, the verifier
    does not wait the whole five seconds: it tries again a second before the bound, and
    the stream that held its place has ended by then."""
    bound = 6.0
    broker = one_stream_broker
    app = broker.create_app(["read:data:*"])
    tokens = [broker.app_token(app) for _ in range(3)]
    current = [tokens[0]]
    gate = threading.Event()
    gate.set()

    def token() -> str:
        assert gate.wait(30)
        return current[0]

    verifier = verifiers(broker.url, credentials=token, max_feed_staleness=bound)
    assert verifier.start(wait=10)

    # Its token revoked, the verifier's stream ends; it is held back while another
    # stream of the same app takes the reader's one place...
    gate.clear()
    jti = jwt_parts(tokens[0])[1]["jti"]
    assert broker.revoke("token", jti).status_code == 200
    other = _held_stream(broker, tokens[1])
    try:
        before = len(_denied(broker, app))
        # ...so that, let go with a fresh token, it is refused: 429, Retry-After 5.
        current[0] = tokens[2]
        gate.set()
        poll(lambda: len(_denied(broker, app)) > before, timeout=10)
        assert verifier.stats()["feed_connections"] == 1
    finally:
        other.close()
    deadline = time.monotonic() + 8
    while verifier.stats()["feed_connections"] < 2:
        assert verifier.ready, f"stale: {verifier.feed_staleness():.2f} s"
        assert time.monotonic() < deadline, "the verifier did not try again"
        time.sleep(0.05)
    poll(lambda: verifier.feed_live(), timeout=5)
    assert verifier.ready


class _Stream:
    def __init__(self, url: str, token: str) -> None:
        self._client = httpx.Client(base_url=url, timeout=10)
        self._opened = self._client.stream(
            "GET", STREAM, headers={"Authorization": f"Bearer {token}"}
        )
        self.response = self._opened.__enter__()
        if self.response.status_code == 200:
            self._lines = self.response.iter_lines()
            for line in self._lines:
                if line.startswith("event: sync"):
                    break

    def close(self) -> None:
        self._opened.__exit__(None, None, None)
        self._client.close()


def _held_stream(broker: RunningBroker, token: str) -> _Stream:
    """A stream of ``token``'s reader, once its place is free (each refusal audited)."""
    deadline = time.monotonic() + 10
    while True:
        stream = _Stream(broker.url, token)
        if stream.response.status_code == 200:
            return stream
        stream.close()
        assert time.monotonic() < deadline, "the reader's place was never given back"
        time.sleep(0.1)


# --- the follower, with answers made up ----------------------------------------------------


def _attempts(handler: Callable[[httpx.Request], httpx.Response], seconds: float) -> int:
    calls: list[float] = []

    def counted(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        return handler(request)

    client = httpx.Client(base_url="http://broker.test", transport=httpx.MockTransport(counted))
    follower = FeedFollower(
        client,
        RevocationIndex(),
        token_source=lambda: "t",
        forget_token=lambda: None,
        read_timeout=1.0,
        on_revocation=lambda: None,
        housekeeping=lambda: None,
    )
    follower.start()
    time.sleep(seconds)
    follower.stop()
    client.close()
    return len(calls)


def test_a_dropped_connection_is_tried_again_at_once() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    assert _attempts(unreachable, 1.0) >= 5


def test_a_429_is_tried_again_after_its_retry_after() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "2"}, request=request)

    assert _attempts(refused, 1.5) == 1


def test_error_answers_in_a_row_back_off() -> None:
    def failing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, request=request)

    # 0.25, 0.5, 1 s (each up to 20% more): four attempts in two seconds, not eight.
    assert 3 <= _attempts(failing, 2.0) <= 4


def test_a_retry_after_no_float_holds_does_not_end_the_follower() -> None:
    """A broker's ``Retry-After`` of 400 digits was read as ``float(int(...))``, which
    raised ``OverflowError`` outside the follower's error handling: its thread ended, and
    the verifier followed no revocation again until restarted."""
    answered = threading.Event()

    def refused(request: httpx.Request) -> httpx.Response:
        answered.set()
        return httpx.Response(503, headers={"Retry-After": "9" * 400}, request=request)

    client = httpx.Client(base_url="http://broker.test", transport=httpx.MockTransport(refused))
    follower = FeedFollower(
        client,
        RevocationIndex(),
        token_source=lambda: "t",
        forget_token=lambda: None,
        read_timeout=1.0,
        on_revocation=lambda: None,
        housekeeping=lambda: None,
    )
    follower.start()
    try:
        assert answered.wait(5)
        thread = follower._thread
        assert thread is not None
        thread.join(0.3)  # it tries again: still following
        assert thread.is_alive()
        assert follower.failures >= 1
    finally:
        follower.stop()
        client.close()
