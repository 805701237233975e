"""A client used after ``close()`` says so: every call that would talk to the broker
raises :class:`~tasklease.client.ClientClosed` (a ``TaskleaseError``, code
``client_closed``), with nothing sent, rather than httpx's ``RuntimeError``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tasklease.client import (
    AdminClient,
    Agent,
    AppClient,
    AsyncAgent,
    ClientClosed,
    TaskleaseError,
    TransportError,
)
from tasklease.client.testing import BrokerForTests

SCOPE = ["read:data:*"]


class Counting(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return super().handle_request(request)


class AsyncCounting(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return await super().handle_async_request(request)


def _refused(call: Callable[[], Any]) -> ClientClosed:
    with pytest.raises(ClientClosed) as caught:
        call()
    error = caught.value
    assert isinstance(error, TaskleaseError) and not isinstance(error, TransportError)
    assert error.code == "client_closed" and error.status is None
    assert "closed" in str(error)
    return error


def test_a_closed_agent_refuses_every_call_and_sends_nothing(broker: BrokerForTests) -> None:
    transport = Counting()
    agent = broker.agent(SCOPE, transport=transport)
    helper = broker.agent(SCOPE)
    child = agent.delegate(helper.agent_id, ["read:data:1"])
    agent.close()
    sent = transport.sent
    _refused(agent.renew)
    _refused(lambda: agent.delegate(helper.agent_id, ["read:data:1"]))
    _refused(lambda: agent.exchange(scope=SCOPE))
    _refused(agent.heartbeat)
    _refused(agent.release)
    _refused(lambda: agent.ensure_fresh(ahead=10_000))  # a renewal due: not swallowed
    _refused(child.release)  # the delegated token shares the closed connections
    with httpx.Client() as other, pytest.raises(ClientClosed):
        other.get(broker.url + "/v1/health", auth=agent.auth_for("https://api.test"))
    assert transport.sent == sent
    agent.close()  # closing again is harmless
    helper.release()
    helper.close()


def test_a_closed_async_agent_refuses_every_call_and_sends_nothing(
    broker: BrokerForTests,
) -> None:
    async def main() -> None:
        transport = AsyncCounting()
        launch = broker.launch_token(SCOPE)
        agent = await AsyncAgent.register(
            broker.url, launch, "orch", "task", SCOPE, transport=transport
        )
        await agent.aclose()
        sent = transport.sent
        for call in (
            agent.renew,
            agent.release,
            agent.heartbeat,
            lambda: agent.exchange(scope=SCOPE),
            lambda: agent.ensure_fresh(ahead=10_000),
        ):
            with pytest.raises(ClientClosed) as caught:
                await call()
            assert caught.value.code == "client_closed"
        assert transport.sent == sent
        await agent.aclose()

    asyncio.run(main())


def test_a_closed_app_client_and_its_agents_refuse(broker: BrokerForTests) -> None:
    admin = broker.admin()
    app = admin.register_app("closing-app", SCOPE)
    transport = Counting()
    client = AppClient(broker.url, app["client_id"], app["client_secret"], transport=transport)
    agent = client.create_agent("orch", "task", SCOPE)
    client.close()
    sent = transport.sent
    _refused(client.health)
    _refused(lambda: client.validate(agent.token))
    _refused(lambda: client.create_launch_token("worker", SCOPE))
    _refused(agent.renew)  # its agents share the app's connections
    assert transport.sent == sent


def test_a_closed_admin_client_refuses(broker: BrokerForTests) -> None:
    transport = Counting()
    admin = AdminClient(broker.url, broker.admin_secret, transport=transport)
    admin.list_apps()
    admin.close()
    sent = transport.sent
    _refused(admin.list_apps)
    _refused(lambda: admin.create_launch_token("worker", SCOPE))
    assert transport.sent == sent


def test_a_closed_agent_as_a_context_manager_says_so(broker: BrokerForTests) -> None:
    agent = broker.agent(SCOPE)
    token = agent.token
    agent.close()
    with pytest.raises(ClientClosed), agent:
        pass  # the release on exit cannot be sent
    assert broker.admin().validate_token(token)["valid"] is True  # nothing was released
    Agent.__repr__(agent)


def test_an_offline_reporter_on_a_closed_client_says_so(broker: BrokerForTests) -> None:
    import nacl.signing

    from tasklease.client import OfflineReporter

    agent = broker.agent(SCOPE, dpop=True)
    closed = httpx.Client()
    closed.close()
    reporter = OfflineReporter(closed, broker.url, agent.auth)
    delegate = nacl.signing.SigningKey.generate().verify_key.encode()
    reporter.derived(agent.attenuate("sub", delegate, scope=["read:data:1"]))
    _refused(reporter.flush)
    reporter.close(flush=False)
    agent.release()
    agent.close()
