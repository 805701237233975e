"""The SDK across a broker outage: a real ``tasklease serve`` process stopped and started again
on the same port. The agent keeps its unexpired token, spaces its renewal attempts out,
renews on the first request after the broker is back, and never uses a token past its exp.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker

from tasklease.client import Agent, AsyncAgent, CredentialExpired, Unauthorized

pytestmark = pytest.mark.slow

SCOPE = ["read:data:*"]


class CountingTransport(httpx.HTTPTransport):
    """Counts the requests that reached the transport, by path (connected or not)."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.paths: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        return await super().handle_async_request(request)


class Clock:
    """The SDK's clock: real time plus what the test adds."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def now(self) -> float:
        return time.time() + self.ahead


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "broker"


@pytest.fixture
def running(data_dir: Path) -> Iterator[RunningBroker]:
    broker = launch_broker(data_dir, dict(SHARED_ENV))
    yield broker
    stop_broker(broker)


def restart(broker: RunningBroker, data_dir: Path) -> RunningBroker:
    """The same broker (database, keys) on the same port, as after an outage."""
    port = int(broker.url.rsplit(":", 1)[1])
    return launch_broker(data_dir, dict(SHARED_ENV), port=port)


def test_renewal_rides_out_an_outage_and_renews_on_recovery(
    running: RunningBroker, data_dir: Path
) -> None:
    transport = CountingTransport()
    launch = running.launch_token(SCOPE)
    # Renewal falls due one second after registration.
    agent = Agent.register(
        running.url, launch, "orch", "task", SCOPE, transport=transport, renew_margin=299
    )
    first = agent.token
    stop_broker(running)
    while time.time() < agent.expires_at - 299 + 0.1:  # until the renewal is due
        time.sleep(0.01)
    outage_started = time.monotonic()
    while time.monotonic() - outage_started < 2.0:
        agent.ensure_fresh()  # never raises while the token lives
        assert agent.token == first
        time.sleep(0.01)
    unreachable = agent.broker_unreachable_for
    assert unreachable is not None and unreachable >= 1.9
    # About 200 requests were made meanwhile; renewal was tried a handful of times, each
    # without the transport's own retries (0.25 s doubling to 2 s, jittered).
    attempts = transport.paths["/v1/token/renew"]
    assert 2 <= attempts <= 8, attempts

    back = restart(running, data_dir)
    try:
        recovered = time.monotonic()
        while agent.token == first:
            agent.ensure_fresh()
            assert time.monotonic() - recovered < 3.0, "no renewal after the broker came back"
            time.sleep(0.01)
        assert agent.broker_unreachable_for is None
        assert back.is_valid(agent.token)
        assert not back.is_valid(first)  # the predecessor was revoked by the renewal
    finally:
        agent.close()
        stop_broker(back)


def test_a_token_is_dead_at_its_exp_while_the_broker_is_away(running: RunningBroker) -> None:
    clock = Clock()
    agent = Agent.register(running.url, running.launch_token(SCOPE), "o", "t", SCOPE, clock=clock)
    stop_broker(running)
    clock.ahead = agent.expires_at - time.time() - 29  # due (30 s margin), 29 s to live
    agent.ensure_fresh()
    assert agent.broker_unreachable_for is not None
    clock.ahead = agent.expires_at - time.time()  # exactly exp: dead
    with pytest.raises(CredentialExpired) as caught:
        agent.ensure_fresh()
    assert isinstance(caught.value, Unauthorized)
    assert caught.value.code == "credential_expired"
    assert "expired 0.0 s ago while the broker could not be reached" in str(caught.value)
    # Through the auth of a client: the request is never sent with the dead token.
    seen: list[httpx.Request] = []
    service = httpx.Client(
        transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200))
    )
    with service, pytest.raises(CredentialExpired):
        service.get("https://resource.invalid/data", auth=agent.auth)
    assert seen == []
    agent.close()


def test_the_async_agent_rides_out_an_outage_too(running: RunningBroker, data_dir: Path) -> None:
    transport = AsyncCountingTransport()
    launch = running.launch_token(SCOPE)

    async def scenario() -> None:
        agent = await AsyncAgent.register(
            running.url, launch, "o", "t", SCOPE, transport=transport, renew_margin=299
        )
        first = agent.token
        stop_broker(running)
        while time.time() < agent.expires_at - 299 + 0.1:  # until the renewal is due
            await asyncio.sleep(0.01)
        for _ in range(50):
            await agent.ensure_fresh()
            await asyncio.sleep(0.01)
        assert agent.token == first and agent.broker_unreachable_for is not None
        assert 1 <= transport.paths["/v1/token/renew"] <= 5
        back = await asyncio.to_thread(restart, running, data_dir)
        try:
            deadline = time.monotonic() + 3.0
            while agent.token == first:
                assert time.monotonic() < deadline, "no renewal after the broker came back"
                await agent.ensure_fresh()
                await asyncio.sleep(0.01)
            assert agent.broker_unreachable_for is None
        finally:
            await agent.aclose()
            stop_broker(back)

    asyncio.run(scenario())


class ManualClock:
    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


def test_the_renewal_schedule_during_an_outage() -> None:
    """The credential's own schedule (no broker): attempts spaced 0.25 s doubling to 2 s
    (jittered by at most half), a 429's Retry-After honoured (and spread by up to half
    again), dead at exp exactly."""
    from tasklease.client import RateLimited, TransportError
    from tasklease.client._flows import Credential, Registration

    clock = ManualClock(1_000.0)
    credential = Credential(
        "https://broker.invalid",
        Registration("spiffe://t/agent/o/t/i", "token", 300),
        SCOPE,
        clock=clock,
        renew_margin=30,
    )
    clock.t = 1_000.0 + 271  # due: 29 s to live
    waits = []
    for _ in range(6):
        assert credential.renewal_due()
        credential.renewal_unreachable(TransportError("cannot reach the broker"))
        start = clock.t
        while not credential.renewal_due():
            clock.t += 0.01
        waits.append(round(clock.t - start, 2))
    for attempt, wait in enumerate(waits):
        ceiling = min(2.0, 0.25 * 2**attempt)
        assert ceiling / 2 - 0.02 <= wait <= ceiling + 0.02, waits
    assert credential.renewal_failures == 6 and credential.unreachable_since == 1_271.0
    credential.renewal_unreachable(RateLimited("slow down", retry_after=7))
    assert not credential.renewal_due()
    clock.t += 6.9
    assert not credential.renewal_due()  # never before the broker's Retry-After
    clock.t += 3.7
    assert credential.renewal_due()  # spread by up to half of it again
    clock.t = credential.expires_at  # exactly exp: dead, not one more attempt
    with pytest.raises(CredentialExpired):
        credential.renewal_unreachable(TransportError("cannot reach the broker"))


def test_a_long_retry_after_never_lets_a_dead_token_out() -> None:
    """A 429 asks to wait past the token's ``exp``: until that next attempt the token is
    not sent (CredentialExpired), and at it a failed renewal says so too."""
    from tasklease.client import RateLimited
    from tasklease.client._flows import Credential, Registration

    clock = ManualClock(1_000.0)
    credential = Credential(
        "https://broker.invalid",
        Registration("spiffe://t/agent/o/t/i", "token", 60),
        SCOPE,
        clock=clock,
        renew_margin=30,
    )
    clock.t += 40  # due, 20 s to live; the broker says: come back in an hour
    credential.renewal_unreachable(RateLimited("slow down", retry_after=3600))
    credential.check_usable()  # alive: still usable
    clock.t = credential.expires_at
    with pytest.raises(CredentialExpired, match="expired 0.0 s ago"):
        credential.check_usable()
    assert not credential.renewal_due()
    clock.t += 3600  # the attempt is due again: tried, not refused beforehand
    credential.check_usable()
    assert credential.renewal_due()


def test_a_renewal_is_due_early_by_what_the_next_steps_need() -> None:
    """``ahead``: seconds the token must last beyond ``renew_margin`` (a handshake's
    steps): due as soon as the token would not, and not before."""
    from tasklease.client._flows import Credential, Registration

    clock = ManualClock(1_000.0)
    credential = Credential(
        "https://broker.invalid",
        Registration("spiffe://t/agent/o/t/i", "token", 300),
        SCOPE,
        clock=clock,
        renew_margin=30,
    )
    clock.t += 200  # 100 s to live
    assert not credential.renewal_due()
    assert not credential.renewal_due(ahead=60)
    assert credential.renewal_due(ahead=70)
