"""The sync and async agents against a real broker over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from tasklease.client import (
    Agent,
    AsyncAgent,
    Forbidden,
    NotFound,
    RenewalCountExceeded,
    RenewalLimitReached,
    ScopeViolation,
    TaskleaseError,
    TransportError,
    Unauthorized,
)
from tasklease.client.testing import BrokerForTests
from tasklease.core.clock import ManualClock

SCOPE = ["read:data:*"]


def is_valid(broker: BrokerForTests, token: str) -> bool:
    return broker.admin().validate_token(token)["valid"] is True


def test_register_call_renew_delegate_release(broker: BrokerForTests, echo_url: str) -> None:
    clock = ManualClock(time.time())
    launch = broker.launch_token(SCOPE)
    with (
        contextlib.ExitStack() as stack,
        Agent.register(broker.url, launch, "orch-1", "task-sync", SCOPE, clock=clock) as agent,
    ):
        assert agent.agent_id.startswith("spiffe://tasklease.local/agent/orch-1/task-sync/")
        assert agent.scope == ("read:data:*",)
        assert agent.expires_at == pytest.approx(clock.now() + 300)
        with httpx.Client(auth=agent.auth) as http:
            first = agent.token
            answer = http.get(echo_url).json()
            assert answer["sub"] == agent.agent_id
            assert agent.token == first  # not due yet: no renewal

            clock.advance(300 - 29)  # inside the 30 s margin: the next request renews first
            answer = http.get(echo_url).json()
            assert agent.token != first
            assert answer["sub"] == agent.agent_id
            assert not is_valid(broker, first)  # the predecessor was revoked by renewal
            assert agent.expires_at == pytest.approx(clock.now() + 300)

        worker = stack.enter_context(broker.agent(SCOPE, task_id="task-worker"))
        helper = stack.enter_context(broker.agent(SCOPE, task_id="task-helper"))
        child = agent.delegate(worker.agent_id, ["read:data:7"], ttl=120)
        assert child.agent_id == worker.agent_id
        assert [r["agent"] for r in child.delegation_chain] == [agent.agent_id]
        answer = httpx.get(echo_url, auth=child.auth).json()
        assert answer == {**answer, "sub": worker.agent_id, "scope": ["read:data:7"], "depth": 1}
        assert httpx.get(echo_url, headers=child.bearer_header).status_code == 200

        grandchild = child.delegate(helper.agent_id, ["read:data:7"])
        assert httpx.get(echo_url, auth=grandchild.auth).json()["depth"] == 2
        with pytest.raises(ScopeViolation) as info:
            child.delegate(helper.agent_id, ["write:data:7"])
        assert info.value.status == 403
        with pytest.raises(NotFound):
            agent.delegate(worker.agent_id.rsplit("/", 1)[0] + "/nobody", ["read:data:7"])
        grandchild.release()
        assert not is_valid(broker, grandchild.token)
        token = agent.token
    assert not is_valid(broker, token)  # released on exit
    agent.release()  # idempotent
    with pytest.raises(Unauthorized):
        agent.ensure_fresh()


def test_release_on_exception(broker: BrokerForTests) -> None:
    agent = broker.agent(SCOPE, task_id="task-boom")
    with pytest.raises(RuntimeError, match="boom"), agent:
        token = agent.token
        assert is_valid(broker, token)
        raise RuntimeError("boom")
    assert not is_valid(broker, token)


def test_release_error_on_exit_does_not_hide_the_original(
    broker: BrokerForTests, caplog: pytest.LogCaptureFixture
) -> None:
    agent = broker.agent(SCOPE, task_id="task-down")
    agent._credential.base_url = "http://127.0.0.1:9"  # the broker is gone by exit time
    with pytest.raises(KeyError), agent:
        raise KeyError("original")
    assert "could not release" in caplog.text


def test_renewal_limit_stops_renewing(limited_broker: BrokerForTests, echo_url: str) -> None:
    clock = ManualClock(time.time())
    broker = limited_broker
    agent = broker.agent(SCOPE, task_id="task-limit", clock=clock, renew_margin=60)
    request_close = agent.close
    agent.renew()  # the one renewal max_renewals=1 allows
    clock.advance(250)
    with httpx.Client(auth=agent.auth) as http:
        with pytest.raises(RenewalCountExceeded) as info:
            http.post(broker.url + "/v1/token/validate", json={"token": "x"})
        error = info.value
        assert isinstance(error, RenewalLimitReached)
        assert isinstance(error, Forbidden)
        assert error.code == "renewal_count_exceeded"
        assert error.status == 403
        assert error.hint and error.request_id
        # The token is still good: it is used, and no renewal is attempted again.
        token = agent.token
        assert http.post(broker.url + "/v1/token/validate", json={"token": "x"}).status_code == 200
        assert agent.token == token
        clock.advance(60)  # past expiry: the same typed error, without a network call
        with pytest.raises(RenewalCountExceeded):
            http.get(broker.url + "/v1/health")
    with pytest.raises(RenewalLimitReached):
        agent.renew()
    request_close()


def test_registration_errors_mirror_codes(broker: BrokerForTests) -> None:
    launch = broker.launch_token(["read:data:1"])
    with pytest.raises(ScopeViolation) as info:
        Agent.register(broker.url, launch, "orch", "task", ["read:data:*"])
    assert info.value.code == "scope_violation"
    assert info.value.request_id
    with pytest.raises(Unauthorized) as bad:
        Agent.register(broker.url, "0" * 64, "orch", "task", ["read:data:1"])
    assert bad.value.status == 401 and bad.value.code == "unauthorized"
    with pytest.raises(TaskleaseError) as malformed:
        Agent.register(broker.url, launch, "orch/x", "task", ["read:data:1"])
    assert malformed.value.code == "invalid_request"


def test_unreachable_broker_is_a_transport_error() -> None:
    with pytest.raises(TransportError) as info:
        Agent.register("http://127.0.0.1:9", "0" * 64, "orch", "task", SCOPE)
    assert info.value.status is None


# -- async -----------------------------------------------------------------------------


def test_async_register_call_renew_delegate_release(broker: BrokerForTests, echo_url: str) -> None:
    clock = ManualClock(time.time())
    worker = broker.agent(SCOPE, task_id="task-async-worker")
    worker.close()  # only its registration is needed
    launch = broker.launch_token(SCOPE)

    async def scenario() -> tuple[str, str]:
        agent = await AsyncAgent.register(
            broker.url, launch, "orch-a", "task-async", SCOPE, clock=clock
        )
        async with agent:
            async with httpx.AsyncClient(auth=agent.auth) as http:
                first = agent.token
                assert (await http.get(echo_url)).json()["sub"] == agent.agent_id
                clock.advance(280)
                assert (await http.get(echo_url)).json()["sub"] == agent.agent_id
                assert agent.token != first
            child = await agent.delegate(worker.agent_id, ["read:data:3"])
            async with httpx.AsyncClient(auth=child.auth) as http:
                assert (await http.get(echo_url)).json()["depth"] == 1
            last = agent.token
        return first, last

    first, last = asyncio.run(scenario())
    assert not is_valid(broker, first)
    assert not is_valid(broker, last)


def test_async_release_on_exception(broker: BrokerForTests) -> None:
    launch = broker.launch_token(SCOPE)
    seen: list[str] = []

    async def scenario() -> None:
        async with await AsyncAgent.register(broker.url, launch, "o", "t-async-boom", SCOPE) as a:
            seen.append(a.token)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(scenario())
    assert not is_valid(broker, seen[0])


def test_async_renewal_limit(limited_broker: BrokerForTests) -> None:
    launch = limited_broker.launch_token(SCOPE)

    async def scenario() -> None:
        async with await AsyncAgent.register(
            limited_broker.url, launch, "o", "t-async-limit", SCOPE
        ) as agent:
            await agent.renew()
            with pytest.raises(RenewalLimitReached):
                await agent.renew()

    asyncio.run(scenario())


class _HoldsRenewalAnswer(httpx.AsyncBaseTransport):
    """Sends through a real transport; a renewal's answer, once the broker has minted the
    successor, is kept (``successor``) and handed back only after a few turns of the loop,
    so that a release can start while the renewal is still in flight."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.answered = asyncio.Event()
        self.successor: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != "/v1/token/renew":
            return response
        body = await response.aread()
        self.successor = httpx.Response(200, content=body).json().get("access_token")
        self.answered.set()
        for _ in range(20):
            await asyncio.sleep(0)
        return httpx.Response(response.status_code, headers=response.headers, content=body)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_async_release_during_a_background_renewal_releases_its_successor(
    broker: BrokerForTests,
) -> None:
    """Releasing while the heartbeat task renews must not drop the renewal's answer:
    the successor the broker minted is the token to release, not its revoked predecessor
    (whose refusal would be taken for an earlier release)."""
    clock = ManualClock(time.time())
    transport = _HoldsRenewalAnswer()

    async def scenario() -> None:
        agent = await AsyncAgent.register(
            broker.url,
            broker.launch_token(SCOPE),
            "orch-a",
            "task-async-hb",
            SCOPE,
            clock=clock,
            transport=transport,
        )
        await agent.start_heartbeats(interval=0)
        clock.advance(280)  # the next beat renews first
        await transport.answered.wait()
        await agent.release()
        await agent.aclose()

    asyncio.run(scenario())
    assert transport.successor is not None
    assert not is_valid(broker, transport.successor)
