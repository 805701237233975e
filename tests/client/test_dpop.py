"""DPoP-bound agents (RFC 9449) against a real broker over loopback HTTP: every request
the SDK makes carries ``Authorization: DPoP`` and a fresh proof, sync and async."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import nacl.signing
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tasklease.client import Agent, AsyncAgent, TaskleaseError, Unauthorized
from tasklease.client._holder import DPoPKey
from tasklease.client.testing import BrokerForTests
from tasklease.core.keys import jwk_thumbprint

SCOPE = ["read:data:*"]


class Served:
    """An ASGI app on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "service did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _decode(part: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def claims_of(jwt: str) -> dict[str, Any]:
    return _decode(jwt.split(".")[1])


def ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


class Recorder(httpx.BaseTransport):
    """Sends through a real transport and keeps every request it sent."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AsyncRecorder(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def check_proofs(requests: list[httpx.Request], key: nacl.signing.SigningKey) -> set[str]:
    """Every request carries a valid-looking proof by ``key``; returns the paths seen."""
    jtis: set[str] = set()
    paths: set[str] = set()
    for request in requests:
        proof = request.headers["DPoP"]
        head, body, _ = proof.split(".")
        header, claims = _decode(head), _decode(body)
        assert header["typ"] == "dpop+jwt" and header["alg"] == "EdDSA"
        assert base64.urlsafe_b64decode(header["jwk"]["x"] + "=") == bytes(key.verify_key)
        assert claims["htm"] == request.method
        assert claims["htu"] == str(request.url.copy_with(query=None))
        assert isinstance(claims["iat"], int)
        assert claims["jti"] not in jtis
        jtis.add(claims["jti"])
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            scheme, token = authorization.split(" ", 1)
            assert scheme == "DPoP"
            assert claims["ath"] == ath(token)
        else:
            assert "ath" not in claims
        paths.add(request.url.path)
    return paths


@pytest.fixture(scope="module")
def dpop_echo(broker: BrokerForTests) -> Iterator[str]:
    """A resource server that checks DPoP-bound tokens with the broker (validate with the
    proof it received, its method and its own URI)."""

    async def echo(request: Request) -> JSONResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        body: dict[str, Any] = {"token": token}
        if scheme == "DPoP":
            body.update(
                dpop=request.headers.get("dpop", ""),
                htm=request.method,
                htu=f"http://{request.headers['host']}{request.url.path}",
            )
        async with httpx.AsyncClient(base_url=broker.url) as client:
            answer = (await client.post("/v1/token/validate", json=body)).json()
        if not answer.get("valid"):
            return JSONResponse({"error": answer.get("error", "invalid")}, 401)
        return JSONResponse({"sub": answer["claims"]["sub"], "scheme": scheme})

    served = Served(Starlette(routes=[Route("/echo", echo)]))
    yield served.url + "/echo"
    served.stop()


def test_dpop_agent_proves_its_key_on_every_call(broker: BrokerForTests, dpop_echo: str) -> None:
    recorder = Recorder()
    with (
        broker.agent(SCOPE, task_id="task-peer", dpop=True) as peer,
        Agent.register(
            broker.url,
            broker.launch_token(SCOPE),
            "orch-1",
            "task-dpop",
            SCOPE,
            dpop=True,
            transport=recorder,
        ) as agent,
    ):
        key = agent.dpop_key
        assert key is not None and peer.dpop_key is not None
        assert claims_of(agent.token)["cnf"] == {"jkt": jwk_thumbprint(bytes(key.verify_key))}
        first = agent.token

        # The bound token is refused without its proof, even by the broker's own routes.
        naked = httpx.post(f"{broker.url}/v1/token/renew", headers=agent.bearer_header)
        assert naked.status_code == 401

        agent.renew()
        assert agent.token != first
        assert claims_of(agent.token)["cnf"] == claims_of(first)["cnf"]

        child = agent.delegate(peer.agent_id, ["read:data:7"], ttl=60)
        assert claims_of(child.token)["cnf"]["jkt"] == jwk_thumbprint(
            bytes(peer.dpop_key.verify_key)
        )  # bound to the delegate's key, not ours

        status = agent.heartbeat()
        assert status.status == "alive"

        def exchange(offer: str) -> str:
            answer, initiator, _, _ = peer.respond_to_handshake(offer)
            assert initiator.agent_id == agent.agent_id
            return answer

        done = agent.handshake(peer.agent_id, exchange)
        assert done.peer.agent_id == peer.agent_id

        # The agent's own calls to a resource server: DPoP with a proof for that URI
        # (the query is not part of htu).
        with httpx.Client(auth=agent.auth) as http:
            answer = http.get(dpop_echo, params={"q": "1"})
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"sub": agent.agent_id, "scheme": "DPoP"}
            assert http.get(dpop_echo).status_code == 200  # a fresh proof each time
        headers = agent.auth_headers("GET", dpop_echo)
        assert headers["Authorization"] == f"DPoP {agent.token}"
        assert httpx.get(dpop_echo, headers=headers).status_code == 200
        assert httpx.get(dpop_echo, headers=headers).status_code == 401  # proof replayed
        token = agent.token

    paths = check_proofs(recorder.requests, key)
    assert {
        "/v1/register",
        "/v1/token/renew",
        "/v1/delegate",
        "/v1/heartbeat",
        "/v1/mutual/initiate",
        "/v1/mutual/complete",
        "/v1/token/release",
    } <= paths
    assert broker.admin().validate_token(token)["valid"] is False  # released


def test_each_server_gets_its_own_dpop_nonce(broker: BrokerForTests) -> None:
    # Would fail if: the key kept one nonce for every server (RFC 9449 section 8: a nonce
    # is a server's own). Then the nonce of one is sent to the other, refused, and
    # overwritten: calling two servers in turn costs a refusal and a retry every call.
    # The two differ in their port only: an origin is scheme, host and port.
    nonces = {"https://rs.example": "nonce-of-a", "https://rs.example:8443": "nonce-of-b"}
    seen: list[tuple[str, str | None]] = []

    def servers(request: httpx.Request) -> httpx.Response:
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        sent = claims_of(request.headers["DPoP"]).get("nonce")
        seen.append((origin, sent))
        wanted = {"DPoP-Nonce": nonces[origin]}
        if sent != nonces[origin]:
            refusal = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', **wanted}
            return httpx.Response(401, headers=refusal, json={"error": "use_dpop_nonce"})
        return httpx.Response(200, headers=wanted, json={})

    with (
        broker.agent(SCOPE, dpop=True) as agent,
        httpx.Client(transport=httpx.MockTransport(servers), auth=agent.auth) as http,
    ):
        for _ in range(3):
            for origin in nonces:
                assert http.get(f"{origin}/api").status_code == 200
    refused = [(origin, sent) for origin, sent in seen if sent != nonces[origin]]
    assert refused == [("https://rs.example", None), ("https://rs.example:8443", None)]
    assert len(seen) == 8


def test_a_key_remembers_the_nonces_of_a_bounded_number_of_servers() -> None:
    key = DPoPKey()

    def answer(url: str, nonce: str) -> httpx.Response:
        return httpx.Response(200, headers={"DPoP-Nonce": nonce}, request=httpx.Request("GET", url))

    for n in range(65):
        assert not key.observe(answer(f"https://rs{n}.example/x", f"nonce-{n}"))
    assert "nonce" not in claims_of(key.proof("GET", "https://rs0.example/y"))  # the oldest
    assert claims_of(key.proof("GET", "https://RS64.example:443/y"))["nonce"] == "nonce-64"


def test_resume_of_a_dpop_agent_needs_its_dpop_key(broker: BrokerForTests) -> None:
    key = nacl.signing.SigningKey.generate()
    first = Agent.register(
        broker.url, broker.launch_token(SCOPE), "orch-1", "task-dpop-r", SCOPE, key=key, dpop=True
    )
    dpop_key = first.dpop_key
    assert dpop_key is not None
    jkt = claims_of(first.token)["cnf"]["jkt"]
    first.close()  # "crashes" without releasing

    with pytest.raises(Unauthorized):  # the registered key alone is not enough
        Agent.resume(broker.url, first.agent_id, key, SCOPE)
    with pytest.raises(Unauthorized):  # nor another DPoP key
        Agent.resume(
            broker.url, first.agent_id, key, SCOPE, dpop=nacl.signing.SigningKey.generate()
        )
    recorder = Recorder()
    with Agent.resume(
        broker.url, first.agent_id, key, SCOPE, dpop=dpop_key, transport=recorder
    ) as resumed:
        assert resumed.agent_id == first.agent_id
        assert claims_of(resumed.token)["cnf"] == {"jkt": jkt}
        resumed.renew()
        assert claims_of(resumed.token)["cnf"] == {"jkt": jkt}
    assert {"/v1/resume", "/v1/token/renew", "/v1/token/release"} <= check_proofs(
        recorder.requests, dpop_key
    )


def test_async_dpop_agent(broker: BrokerForTests, dpop_echo: str) -> None:
    async def main() -> None:
        recorder = AsyncRecorder()
        given = nacl.signing.SigningKey.generate()
        with broker.agent(SCOPE, task_id="task-apeer") as peer:
            async with await AsyncAgent.register(
                broker.url,
                broker.launch_token(SCOPE),
                "orch-1",
                "task-adpop",
                SCOPE,
                dpop=given,
                transport=recorder,
            ) as agent:
                assert agent.dpop_key is given
                jkt = jwk_thumbprint(bytes(given.verify_key))
                assert claims_of(agent.token)["cnf"] == {"jkt": jkt}
                await agent.renew()
                assert claims_of(agent.token)["cnf"] == {"jkt": jkt}
                child = await agent.delegate(peer.agent_id, ["read:data:3"])
                assert "cnf" not in claims_of(child.token)  # the peer is a bearer agent
                await agent.heartbeat()
                async with httpx.AsyncClient(auth=agent.auth) as http:
                    answer = await http.get(dpop_echo, params={"x": "y"})
                    assert answer.json() == {"sub": agent.agent_id, "scheme": "DPoP"}
        paths = check_proofs(recorder.requests, given)
        assert {
            "/v1/register",
            "/v1/token/renew",
            "/v1/delegate",
            "/v1/heartbeat",
            "/v1/token/release",
        } <= paths

    asyncio.run(main())


def test_bearer_agent_is_unchanged(broker: BrokerForTests, dpop_echo: str) -> None:
    with broker.agent(SCOPE, task_id="task-bearer") as agent:
        assert agent.dpop_key is None
        assert "cnf" not in claims_of(agent.token)
        assert agent.auth_headers("GET", dpop_echo) == agent.bearer_header
        with httpx.Client(auth=agent.auth) as http:
            assert http.get(dpop_echo).json() == {"sub": agent.agent_id, "scheme": "Bearer"}


class SpoilsReleaseProofs(httpx.BaseTransport):
    """Sends through a real transport, with a proof the broker refuses on every release
    (a clock out of the proof window, a middlebox rewriting the header)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.spoil = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.spoil and request.url.path == "/v1/token/release":
            request.headers["DPoP"] = request.headers["DPoP"][:-4] + "AAAA"
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AsyncSpoilsReleaseProofs(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.spoil = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.spoil and request.url.path == "/v1/token/release":
            request.headers["DPoP"] = request.headers["DPoP"][:-4] + "AAAA"
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _still_renews(broker: BrokerForTests, agent: Agent | AsyncAgent) -> bool:
    url = f"{broker.url}/v1/token/renew"
    return httpx.post(url, headers=agent.auth_headers("POST", url)).status_code == 200


def test_a_release_whose_proof_is_refused_is_not_reported_as_done(
    broker: BrokerForTests,
) -> None:
    """Only a refused token counts as released: a 401 for the proof leaves the token
    valid, so release raises and can be tried again."""
    spoiler = SpoilsReleaseProofs()
    agent = broker.agent(SCOPE, task_id="task-dpop-rel", dpop=True, transport=spoiler)
    with pytest.raises(Unauthorized) as refused:
        agent.release()
    assert refused.value.oauth_error == "invalid_dpop_proof"
    assert refused.value.denial_id is not None
    assert _still_renews(broker, agent)  # the token was live: release had failed
    spoiler.spoil = False
    agent.release()
    url = f"{broker.url}/v1/token/renew"
    assert httpx.post(url, headers=agent.auth_headers("POST", url)).status_code == 401
    agent.close()


def test_async_a_release_whose_proof_is_refused_is_not_reported_as_done(
    broker: BrokerForTests,
) -> None:
    async def main() -> None:
        spoiler = AsyncSpoilsReleaseProofs()
        agent = await AsyncAgent.register(
            broker.url,
            broker.launch_token(SCOPE),
            "orch-1",
            "task-adpop-rel",
            SCOPE,
            dpop=True,
            transport=spoiler,
        )
        with pytest.raises(Unauthorized) as refused:
            await agent.release()
        assert refused.value.oauth_error == "invalid_dpop_proof"
        assert _still_renews(broker, agent)
        spoiler.spoil = False
        await agent.release()
        await agent.aclose()

    asyncio.run(main())


def _bound_delegation_is_live(broker: BrokerForTests, token: str, delegate: Agent) -> bool:
    """Whether ``token`` (bound to ``delegate``'s DPoP key) validates with its proof."""
    resource = "https://resource.example/data"
    assert delegate.dpop_key is not None
    proof = DPoPKey(delegate.dpop_key).proof("GET", resource, token)
    body = {"token": token, "dpop": proof, "htm": "GET", "htu": resource}
    answer = httpx.post(f"{broker.url}/v1/token/validate", json=body).json()
    return answer.get("valid") is True


def test_a_delegation_bound_to_its_delegate_is_not_reported_released_by_the_delegator(
    broker: BrokerForTests,
) -> None:
    """The delegator cannot present a token bound to its delegate's key, so the broker
    refuses the token and never ends it: release says so instead of succeeding."""
    with (
        broker.agent(SCOPE, task_id="task-dpop-deleg", dpop=True) as agent,
        broker.agent(SCOPE, task_id="task-dpop-delegate", dpop=True) as delegate,
    ):
        child = agent.delegate(delegate.agent_id, ["read:data:1"])
        assert "jkt" in claims_of(child.token)["cnf"]
        with pytest.raises(TaskleaseError) as refused:
            child.release()
        assert refused.value.code == "holder_bound"
        assert child.token not in str(refused.value)
        assert _bound_delegation_is_live(broker, child.token, delegate)

        async def main() -> None:
            async with await AsyncAgent.register(
                broker.url, broker.launch_token(SCOPE), "orch-1", "task-adeleg", SCOPE, dpop=True
            ) as parent:
                achild = await parent.delegate(delegate.agent_id, ["read:data:2"])
                with pytest.raises(TaskleaseError) as arefused:
                    await achild.release()
                assert arefused.value.code == "holder_bound"
                assert _bound_delegation_is_live(broker, achild.token, delegate)

        asyncio.run(main())
