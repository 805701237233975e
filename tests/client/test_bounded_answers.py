"""The clients the SDK builds (an agent's, sync and async, ``AdminClient``'s, discovery's)
ask for answers uncompressed and read them off the wire with a cap (client._bounded): a
gzip bomb or an endless answer is a ``TransportError`` that says why, not the process's
memory. A transport the caller gives is put behind the same bound; the environment's
proxies are still used, except for a loopback broker, which is always reached directly.

Over loopback HTTP, against a fake broker (uvicorn in a thread, answers_support).
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable, Iterator

import httpx
import pytest
from answers_support import GZIP, PEAK_BYTES, Answer, FakeServer, bomb, peak_memory, serving

from tasklease.client import AdminClient, Agent, AsyncAgent, TransportError, discover
from tasklease.client._bounded import MAX_ADMIN_ANSWER, MAX_ANSWER
from tasklease.rules.cleartext import InsecureHTTPWarning

SCOPE = ["read:data:1"]
CHALLENGE = Answer(body=json.dumps({"nonce": "00" * 32}).encode())
REGISTERED = Answer(
    body=json.dumps(
        {"agent_id": "spiffe://example.org/agent/a", "access_token": "t", "expires_in": 600}
    ).encode()
)
ENDLESS = Answer(body=b" " * 65536, chunks=800)  # 52 MB, chunked: no length to refuse it by
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with serving() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeServer) -> FakeServer:
    server.reset()
    return server


# Would fail if: the agent's client asked for gzip and let httpx inflate the answer before
# anything counted it (100 MB here, from 100 KB on the wire).
def test_registering_against_a_gzip_bomb_fails_uninflated(fake: FakeServer) -> None:
    fake.answer(Answer(body=bomb(), headers=GZIP))
    with peak_memory() as peak, pytest.raises(TransportError) as refused:
        Agent.register(fake.url, "launch", "orch", "task", SCOPE)
    assert peak.bytes < PEAK_BYTES
    assert "cannot use the broker's answer: a compressed body (gzip) is refused" in str(
        refused.value
    )
    assert fake.paths == ["/v1/challenge"]
    assert fake.encodings == ["identity"]


def test_a_renewal_answered_with_a_gzip_bomb_fails_uninflated(fake: FakeServer) -> None:
    fake.answer(CHALLENGE, REGISTERED, Answer(body=bomb(), headers=GZIP))
    agent = Agent.register(fake.url, "launch", "orch", "task", SCOPE)
    try:
        with peak_memory() as peak, pytest.raises(TransportError, match="compressed"):
            agent.renew()
        assert peak.bytes < PEAK_BYTES
        assert fake.paths == ["/v1/challenge", "/v1/register", "/v1/token/renew"]
        assert fake.encodings == ["identity"] * 3
    finally:
        agent.close()


def test_the_async_agent_registering_against_a_gzip_bomb_fails_uninflated(
    fake: FakeServer,
) -> None:
    fake.answer(Answer(body=bomb(), headers=GZIP))

    async def register() -> None:
        await AsyncAgent.register(fake.url, "launch", "orch", "task", SCOPE)

    with peak_memory() as peak, pytest.raises(TransportError, match="compressed body"):
        asyncio.run(register())
    assert peak.bytes < PEAK_BYTES
    assert fake.encodings == ["identity"]


def test_an_endless_answer_is_cut_off_at_the_cap(fake: FakeServer) -> None:
    # Would fail if: the answer was read to its end (52 MB) before anything was counted.
    fake.answer(ENDLESS)
    with peak_memory() as peak, pytest.raises(TransportError, match=f"larger than {MAX_ANSWER}"):
        Agent.register(fake.url, "launch", "orch", "task", SCOPE)
    assert peak.bytes < PEAK_BYTES


def test_the_async_agent_cuts_an_endless_answer_off_at_the_cap(fake: FakeServer) -> None:
    fake.answer(ENDLESS)

    async def register() -> None:
        await AsyncAgent.register(fake.url, "launch", "orch", "task", SCOPE)

    with peak_memory() as peak, pytest.raises(TransportError, match="larger than"):
        asyncio.run(register())
    assert peak.bytes < PEAK_BYTES


def test_an_answer_declaring_more_than_the_cap_is_refused_before_it_is_read(
    fake: FakeServer,
) -> None:
    fake.answer(Answer(body=b" " * (MAX_ANSWER + 1)))
    with pytest.raises(TransportError, match="larger than"):
        Agent.register(fake.url, "launch", "orch", "task", SCOPE)


def test_the_admin_client_refuses_a_gzip_bomb_uninflated(fake: FakeServer) -> None:
    signed_in = Answer(body=json.dumps({"access_token": "t", "expires_in": 600}).encode())
    fake.answer(signed_in, Answer(body=bomb(), headers=GZIP))
    with (
        AdminClient(fake.url, "secret") as admin,
        peak_memory() as peak,
        pytest.raises(TransportError) as refused,
    ):
        admin.list_apps()
    assert peak.bytes < PEAK_BYTES
    assert f"cannot use the answer of the broker at {fake.url}" in str(refused.value)
    assert "compressed body (gzip)" in str(refused.value)
    assert fake.paths == ["/v1/admin/auth", "/v1/admin/apps"]
    assert fake.encodings == ["identity", "identity"]


def test_the_admin_client_reads_answers_larger_than_an_agents_cap(fake: FakeServer) -> None:
    # Its listings are larger: a page of 1,000 audit events, the apps (not paged).
    apps = [{"app_id": f"app-{n}", "name": "x" * 100} for n in range(2 * MAX_ANSWER // 100)]
    signed_in = Answer(body=json.dumps({"access_token": "t", "expires_in": 600}).encode())
    fake.answer(signed_in, Answer(body=json.dumps({"apps": apps}).encode()))
    with AdminClient(fake.url, "secret") as admin:
        assert len(admin.list_apps()) == len(apps)
    declared = httpx.MockTransport(
        lambda _: httpx.Response(
            200, headers={"content-length": str(MAX_ADMIN_ANSWER + 1)}, stream=_Never()
        )
    )
    with (
        AdminClient(fake.url, None, transport=declared) as admin,
        pytest.raises(TransportError, match=f"larger than {MAX_ADMIN_ANSWER}"),
    ):
        admin.jwks()


class _Never(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        raise AssertionError("a body refused by its length was read")


def test_a_transport_the_caller_gives_is_behind_the_bound() -> None:
    # Would fail if: a caller's transport (a test's mock, an mTLS transport) was used bare.
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers["accept-encoding"])
        return httpx.Response(200, headers=GZIP, content=b"\x1f\x8b")

    mock = httpx.MockTransport(answer)
    with pytest.raises(TransportError, match="compressed"):
        Agent.register("https://broker.example", "launch", "orch", "task", SCOPE, transport=mock)
    with pytest.raises(TransportError, match="compressed"):
        discover("https://api.example/orders", transport=mock)
    assert asked == ["identity", "identity"]


def _proxy_environment(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_a_proxy_from_the_environment_is_still_used_and_bounded(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Would fail if: bounding the transport dropped the environment's proxies (httpx uses
    # them only for a client built without a transport of its caller's), or left the
    # proxy's transport unbounded. The broker is beyond loopback: a loopback one is
    # never reached through a proxy (below).
    _proxy_environment(monkeypatch, http_proxy=fake.url)
    fake.answer(Answer(body=bomb(), headers=GZIP))
    with (
        warnings.catch_warnings(),
        peak_memory() as peak,
        pytest.raises(TransportError, match="compressed"),
    ):
        warnings.simplefilter("ignore", InsecureHTTPWarning)
        # No such host: only the proxy answers.
        Agent.register(
            "http://broker.invalid:9", "launch", "orch", "task", SCOPE, insecure_http=True
        )
    assert peak.bytes < PEAK_BYTES
    assert fake.paths == ["/v1/challenge"]
    assert fake.encodings == ["identity"]


@pytest.fixture(scope="module")
def proxy_server() -> Iterator[FakeServer]:
    with serving() as proxy:
        yield proxy


def _sign_in_and_list(url: str) -> None:
    with AdminClient(url, "secret") as admin:
        admin.list_apps()


def _register(url: str) -> None:
    Agent.register(url, "launch", "orch", "task", SCOPE).close()


def _register_async(url: str) -> None:
    async def register() -> None:
        agent = await AsyncAgent.register(url, "launch", "orch", "task", SCOPE)
        await agent.aclose()

    asyncio.run(register())


SIGNED_IN = Answer(body=json.dumps({"access_token": "t", "expires_in": 600}).encode())


# Would fail if: a proxy named by the environment (HTTP_PROXY, ALL_PROXY, without a
# NO_PROXY for loopback) carried requests for a loopback broker, with the admin secret,
# app secrets and tokens in them, off the machine in clear.
@pytest.mark.parametrize(
    ("entry", "answers", "paths"),
    [
        (_register, (CHALLENGE, REGISTERED), ["/v1/challenge", "/v1/register"]),
        (_register_async, (CHALLENGE, REGISTERED), ["/v1/challenge", "/v1/register"]),
        (_sign_in_and_list, (SIGNED_IN, Answer(body=b'{"apps": []}')), None),
    ],
    ids=["agent", "async-agent", "admin"],
)
@pytest.mark.parametrize(
    ("variable", "host"),
    [("http_proxy", "127.0.0.1"), ("all_proxy", "127.0.0.1"), ("http_proxy", "localhost")],
)
def test_a_loopback_broker_is_never_reached_through_a_proxy_from_the_environment(
    fake: FakeServer,
    proxy_server: FakeServer,
    monkeypatch: pytest.MonkeyPatch,
    entry: Callable[[str], None],
    answers: tuple[Answer, ...],
    paths: list[str] | None,
    variable: str,
    host: str,
) -> None:
    proxy_server.reset()
    _proxy_environment(monkeypatch, **{variable: proxy_server.url})
    fake.answer(*answers)
    entry(fake.url.replace("127.0.0.1", host))
    assert proxy_server.paths == []
    assert fake.paths == (paths or ["/v1/admin/auth", "/v1/admin/apps"])
    assert fake.encodings == ["identity"] * len(fake.paths)  # still bounded
