"""The SDK at parity with the ``agentwrit`` one and beyond: an app client, a token for one
resource by token exchange, retries that honour ``Retry-After``, typed OAuth errors, and
``auth`` objects that httpx2 clients (the ``mcp`` package's) accept."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs

import httpx
import nacl.signing
import pytest

from tasklease.client import (
    Agent,
    AppClient,
    AsyncAgent,
    InvalidClient,
    InvalidScope,
    InvalidTarget,
    RateLimited,
    Retry,
    Unavailable,
)
from tasklease.client._retry import NO_RETRY, retry_after_seconds
from tasklease.client.testing import BrokerForTests

RESOURCE = "https://orders.example/api"
AUDIENCE = "tasklease"  # the broker's default audience: a logical name (RFC 8693)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def _app(broker: BrokerForTests, scopes: list[str]) -> dict[str, Any]:
    return broker.admin().register_app(f"app-{time.monotonic_ns()}", scopes)


def test_app_client_signs_in_with_client_credentials_and_launches_agents(
    broker: BrokerForTests,
) -> None:
    app = _app(broker, ["read:data:*"])
    with AppClient(broker.url, app["client_id"], app["client_secret"]) as client:
        first = client.app_token()
        assert client.app_token() == first  # reused until a minute before it expires
        launch = client.create_launch_token(
            "worker", ["read:data:1"], resource=RESOURCE, principal="user:alice@example.com"
        )
        assert launch["launch_token"]
        with client.create_agent(
            "orch", "task-1", ["read:data:1"], resource=RESOURCE, principal="user:bob@example.com"
        ) as agent:
            # Valid, but not for this broker: its token is for RESOURCE alone (TM-39).
            assert client.validate(agent.token)["valid"] is False
            claims = _claims(agent.token)
            assert claims["sub"] == agent.agent_id
            assert claims["aud"] == [RESOURCE]
            assert claims["principal"] == "user:bob@example.com"
        assert client.health()["status"] == "ok"
    with (
        AppClient(broker.url, app["client_id"], "wrong") as wrong,
        pytest.raises(InvalidClient) as refused,
    ):
        wrong.app_token()
    assert refused.value.oauth_error == "invalid_client" and refused.value.denial_id


def test_exchange_gives_a_token_for_one_resource_and_auth_for_presents_it(
    broker: BrokerForTests, echo_url: str
) -> None:
    app = _app(broker, ["read:data:*"])
    with (
        AppClient(broker.url, app["client_id"], app["client_secret"]) as client,
        client.create_agent("orch", "task-x", ["read:data:1", "read:data:2"]) as agent,
    ):
        narrow = agent.exchange(scope=["read:data:1"])
        assert narrow.scope == ("read:data:1",) and narrow.token_type == "Bearer"
        with pytest.raises(InvalidScope):
            agent.exchange(scope=["write:data:1"])
        with pytest.raises(InvalidTarget):
            agent.exchange(resource="not a uri")
        with httpx.Client(auth=agent.auth_for(AUDIENCE, ["read:data:2"])) as http:
            seen = http.get(echo_url).json()
        assert seen["scope"] == ["read:data:2"] and seen["sub"] == agent.agent_id


def _scripted(*answers: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return httpx.MockTransport(handler), seen


_TOKEN = {"access_token": "t", "expires_in": 300, "token_type": "Bearer"}


def _problem(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"error_code": code, "detail": code, "status": status}
    return httpx.Response(status, json=body, headers=headers)


def test_retries_honour_retry_after_on_429_and_503() -> None:
    transport, seen = _scripted(
        _problem(429, "rate_limited", **{"Retry-After": "0"}),
        _problem(503, "service_unavailable", **{"Retry-After": "0"}),
        httpx.Response(200, json=_TOKEN),
    )
    client = AppClient("https://broker.example", "id", "secret", transport=transport)
    assert client.app_token() == "t"
    assert len(seen) == 3
    assert seen[0].headers["authorization"].startswith("Basic ")

    # The broker asks for longer than the policy waits: the error, with its Retry-After.
    transport, seen = _scripted(_problem(429, "rate_limited", **{"Retry-After": "120"}))
    with pytest.raises(RateLimited) as limited:
        AppClient("https://broker.example", "id", "s", transport=transport).app_token()
    assert limited.value.retry_after == 120 and len(seen) == 1

    # No Retry-After: backoff, then give up after the policy's attempts.
    unavailable = [_problem(503, "service_unavailable") for _ in range(3)]
    transport, seen = _scripted(*unavailable)
    policy = Retry(attempts=2, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        AppClient(
            "https://broker.example", "id", "s", transport=transport, retry=policy
        ).app_token()
    assert len(seen) == 3 and time.monotonic() - started < 1

    # Other errors are answered at once.
    transport, seen = _scripted(_problem(400, "invalid_scope"))
    with pytest.raises(InvalidScope):
        AppClient("https://broker.example", "id", "s", transport=transport).app_token()
    assert len(seen) == 1


def test_a_retried_sign_in_sends_a_fresh_client_assertion(broker: BrokerForTests) -> None:
    # Would fail if: a retried sign-in resent the assertion of the first attempt. The
    # broker spends an assertion's jti once; when an answer is lost after that (here a
    # gateway answers 503 in place of the broker's 200), the same assertion sent again is
    # refused as a replay and the app cannot sign in, where a fresh one succeeds.
    key = nacl.signing.SigningKey.generate()
    public_key = base64.b64encode(bytes(key.verify_key)).decode()
    app = broker.admin().register_app(
        f"app-{time.monotonic_ns()}", ["read:data:*"], public_key=public_key
    )
    assertions: list[dict[str, Any]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # the metadata, read once for the issuer
            answer = upstream.handle_request(request)
            answer.read()
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )
        form = parse_qs(request.content.decode())
        assertions.append(_claims(form["client_assertion"][0]))
        answer = upstream.handle_request(request)
        answer.read()
        if len(assertions) == 1:  # the broker signed in (and spent the jti); lost
            assert answer.status_code == 200, answer.text
            return _problem(503, "service_unavailable", **{"Retry-After": "0"})
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    with (
        httpx.HTTPTransport() as upstream,
        AppClient(
            broker.url,
            app["client_id"],
            private_key=key,
            transport=httpx.MockTransport(gateway),
            retry=Retry(backoff=0),
        ) as client,
    ):
        assert client.app_token()
    first, second = assertions
    assert first["jti"] != second["jti"]
    assert second["exp"] - second["iat"] == first["exp"] - first["iat"]


def test_a_connection_never_made_is_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=_TOKEN)

    client = AppClient(
        "https://broker.example",
        "i",
        "s",
        transport=httpx.MockTransport(handler),
        retry=Retry(backoff=0),
    )
    assert client.app_token() == "t" and calls == 2


def test_retry_after_as_seconds_or_http_date() -> None:
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "9" * 5000, "-1", "1.5"])
def test_a_retry_after_that_is_no_delay_is_ignored_not_raised(value: str) -> None:
    # Would fail if: a broker (or anything answering for it) could make the SDK raise a
    # bare ValueError, outside its documented errors, with a Retry-After of digits that
    # are not ASCII ("\u00b2".isdigit() is True) or too many of them for int().
    assert retry_after_seconds(value) is None
    answer = httpx.Response(
        429,
        json={"error_code": "rate_limited", "detail": "slow down", "status": 429},
        headers=[(b"retry-after", value.encode())],  # as the bytes came off the wire
    )
    transport, _ = _scripted(answer)
    with pytest.raises(RateLimited) as limited:
        AppClient(
            "https://broker.example", "id", "s", transport=transport, retry=NO_RETRY
        ).app_token()
    assert limited.value.retry_after is None


httpx2 = pytest.importorskip("httpx2")


@pytest.mark.parametrize("dpop", [False, True], ids=["bearer", "dpop"])
def test_agent_auth_works_with_httpx2_clients(broker: BrokerForTests, dpop: bool) -> None:
    """httpx2 accepts the SDK's auth objects, and the broker accepts what they attach
    (a DPoP proof whose htu comes from an httpx2 URL included)."""
    agent = Agent.register(
        broker.url, broker.launch_token(["read:data:1"]), "o", "t", ["read:data:1"], dpop=dpop
    )
    resource = agent.exchange()  # a narrower token, bound as the agent's is
    with httpx2.Client(timeout=10) as client:
        url = f"{broker.url}/v1/token/release"
        released = client.post(url, headers=resource.headers("POST", url))
    assert released.status_code == 204, released.text
    with httpx2.Client(auth=agent.auth, timeout=10) as client:
        renewed = client.post(f"{broker.url}/v1/token/renew")
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["token_type"] == ("DPoP" if dpop else "Bearer")
    agent.close()


def test_async_agent_auth_for_works_with_httpx2_async_clients(
    broker: BrokerForTests, echo_url: str
) -> None:
    async def run() -> dict[str, Any]:
        token = broker.launch_token(["read:data:1"])
        async with await AsyncAgent.register(broker.url, token, "o", "t", ["read:data:1"]) as agent:
            async with httpx2.AsyncClient(auth=agent.auth_for(AUDIENCE), timeout=10) as c:
                answer = await c.get(echo_url)
            assert answer.status_code == 200, answer.text
            result: dict[str, Any] = answer.json()
            return result

    assert asyncio.run(run())["scope"] == ["read:data:1"]
