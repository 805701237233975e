"""What docs/agents.md section 8 promises a program: threads and tasks sharing one agent
renew it once, ``AdminClient`` takes what the launch-token endpoint takes and refuses a
scope list given as one string, ``Verifier`` works as an async context manager, and an
error's ``repr`` names the denial and request it came with."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tasklease.client import AdminClient, Agent, AsyncAgent, CredentialExpired, Unauthorized
from tasklease.client.testing import BrokerForTests
from tasklease.core.clock import ManualClock
from tasklease.verify import AppCredentials, Verifier

SCOPE = ["read:data:*"]


def renewals(broker: BrokerForTests, token: str) -> int:
    answer = broker.admin().validate_token(token)
    assert answer["valid"] is True
    count: int = answer["claims"]["rnc"]
    return count


def test_threads_sharing_a_due_agent_renew_it_once(broker: BrokerForTests, echo_url: str) -> None:
    clock = ManualClock(time.time())
    launch = broker.launch_token(SCOPE)
    with Agent.register(broker.url, launch, "orch", "threads", SCOPE, clock=clock) as agent:
        clock.advance(300 - 29)  # inside the renewal margin: the next request renews
        start = threading.Barrier(8)
        seen: list[str] = []
        failures: list[BaseException] = []

        def call() -> None:
            start.wait()
            try:
                with httpx.Client(auth=agent.auth) as http:
                    seen.append(http.get(echo_url).json()["jti"])
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert failures == []
        assert len(seen) == 8 and len(set(seen)) == 1  # every request carried the successor
        assert renewals(broker, agent.token) == 1


def test_tasks_sharing_a_due_async_agent_renew_it_once(
    broker: BrokerForTests, echo_url: str
) -> None:
    async def main() -> tuple[list[str], int]:
        clock = ManualClock(time.time())
        launch = broker.launch_token(SCOPE)
        agent = await AsyncAgent.register(broker.url, launch, "orch", "tasks", SCOPE, clock=clock)
        async with agent:
            clock.advance(300 - 29)
            async with httpx.AsyncClient(auth=agent.auth) as http:
                answers = await asyncio.gather(*(http.get(echo_url) for _ in range(8)))
            return [a.json()["jti"] for a in answers], renewals(broker, agent.token)

    seen, renewed = asyncio.run(main())
    assert len(seen) == 8 and len(set(seen)) == 1
    assert renewed == 1


def test_admin_launch_tokens_name_the_principal(broker: BrokerForTests) -> None:
    made = broker.admin().create_launch_token("support", SCOPE, principal="user:alice@example.com")
    with Agent.register(broker.url, made["launch_token"], "orch", "principal", SCOPE) as agent:
        claims = broker.admin().validate_token(agent.token)["claims"]
        assert claims["principal"] == "user:alice@example.com"


@pytest.mark.parametrize(
    "call",
    [
        lambda admin: admin.create_launch_token("support", "read:data:1"),
        lambda admin: admin.register_app("one-string", "read:data:*"),
        lambda admin: admin.update_app("app-x", scopes="read:data:*"),
    ],
    ids=["create_launch_token", "register_app", "update_app"],
)
def test_admin_refuses_a_scope_list_given_as_one_string(
    broker: BrokerForTests, call: Callable[[AdminClient], object]
) -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    admin = AdminClient(broker.url, broker.admin_secret, transport=httpx.MockTransport(record))
    with admin, pytest.raises(TypeError, match="not one string"):
        call(admin)
    assert sent == []  # refused before signing in or sending anything


def test_verifier_is_an_async_context_manager(broker: BrokerForTests) -> None:
    app = broker.admin().register_app(f"async-ctx-{time.monotonic_ns()}", SCOPE)
    credentials = AppCredentials(app["client_id"], app["client_secret"])

    async def main(token: str) -> tuple[bool, str]:
        async with Verifier(broker.url, audience="tasklease", credentials=credentials) as v:
            ready = v.ready
            verified = await v.averify(token)
        return ready, verified.sub

    with broker.agent(SCOPE, task_id="async-verifier") as agent:
        ready, sub = asyncio.run(main(agent.token))
    assert ready and sub == agent.agent_id


def test_an_errors_repr_names_its_denial_and_request(broker: BrokerForTests) -> None:
    launch = broker.launch_token(SCOPE)
    Agent.register(broker.url, launch, "orch", "spent", SCOPE).close()
    with pytest.raises(Unauthorized) as refused:
        Agent.register(broker.url, launch, "orch", "spent", SCOPE)
    error = refused.value
    assert error.denial_id is not None and error.denial_id.startswith("den_")
    assert f"denial_id={error.denial_id!r}" in repr(error)
    assert f"request_id={error.request_id!r}" in repr(error)
    assert str(error) == error.detail  # the message stays the problem's detail


class _Counting(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


def test_an_agent_idle_past_its_exp_is_expired_and_sends_no_dead_token(
    broker: BrokerForTests, echo_url: str
) -> None:
    clock = ManualClock(time.time())
    transport = _Counting()
    launch = broker.launch_token(SCOPE)
    agent = Agent.register(
        broker.url, launch, "orch", "idle", SCOPE, clock=clock, transport=transport
    )
    try:
        clock.advance(agent.expires_at - clock.now() + 1)  # idle one second past exp
        transport.paths.clear()
        with httpx.Client() as http, pytest.raises(CredentialExpired) as expired:
            http.get(echo_url, auth=agent.auth)
        assert "resume" in str(expired.value) and "ensure_fresh" in str(expired.value)
        assert isinstance(expired.value, Unauthorized)
        with pytest.raises(CredentialExpired):
            agent.delegate(agent.agent_id, SCOPE)
        assert transport.paths == []  # no renewal of a dead token was sent
    finally:
        agent.close()


def test_ensure_fresh_from_a_thread_keeps_an_idle_agent_alive(broker: BrokerForTests) -> None:
    """The recipe of docs/agents.md section 8: a thread that calls ``ensure_fresh``."""
    clock = ManualClock(time.time())
    launch = broker.launch_token(SCOPE)
    with Agent.register(broker.url, launch, "orch", "kept", SCOPE, clock=clock) as agent:
        first = agent.token
        for _ in range(3):  # three token lifetimes, renewed each time within its margin
            clock.advance(300 - 20)
            keeper = threading.Thread(target=agent.ensure_fresh)
            keeper.start()
            keeper.join(timeout=30)
        assert agent.token != first
        assert renewals(broker, agent.token) == 3


def test_threads_sharing_an_admin_client_sign_in_once(broker: BrokerForTests) -> None:
    """Each sign-in is audited and counted against the per-address sign-in limit (a burst
    of 10 by default): a pool of threads on one client must not spend it."""
    transport = _Counting()
    with AdminClient(broker.url, broker.admin_secret, transport=transport) as admin:
        start = threading.Barrier(12)
        failures: list[BaseException] = []

        def call() -> None:
            start.wait()
            try:
                admin.list_apps()
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=call) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
    assert transport.paths.count("/v1/admin/auth") == 1
    assert transport.paths.count("/v1/admin/apps") == 12
