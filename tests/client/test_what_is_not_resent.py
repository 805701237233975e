"""A request carrying a single-use DPoP proof is sent again only re-bound with a fresh
proof. Registration has no re-binding: a registration refused with 503 is reported, not
resent with the proof the broker may already have spent (and would refuse as a replay)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tasklease.client import Agent, AsyncAgent, TaskleaseError, TransportError, Unavailable
from tasklease.client._holder import DPoPKey

NONCE = "00" * 32
URL = "https://broker.example"


def _refused(request: httpx.Request, sent: list[httpx.Request]) -> httpx.Response:
    if request.url.path == "/v1/challenge":
        return httpx.Response(200, json={"nonce": NONCE, "expires_in": 30})
    sent.append(request)
    body = {"error_code": "service_unavailable", "detail": "try later", "status": 503}
    return httpx.Response(503, json=body, headers={"Retry-After": "0"})


def test_a_dpop_registration_refused_with_503_is_not_resent() -> None:
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: _refused(request, sent))
    with pytest.raises(Unavailable):
        Agent.register(URL, "f" * 64, "o", "t", ["read:x:*"], transport=transport, dpop=True)
    assert len(sent) == 1
    assert "dpop" in sent[0].headers


def test_an_async_dpop_registration_refused_with_503_is_not_resent() -> None:
    sent: list[httpx.Request] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        return _refused(request, sent)

    async def register() -> None:
        await AsyncAgent.register(
            URL,
            "f" * 64,
            "o",
            "t",
            ["read:x:*"],
            transport=httpx.MockTransport(answer),
            dpop=True,
        )

    with pytest.raises(Unavailable):
        asyncio.run(register())
    assert len(sent) == 1
    assert "dpop" in sent[0].headers


def test_a_registration_whose_answer_timed_out_is_not_sent_again() -> None:
    # The request reached the broker (the answer is what timed out): it may have
    # registered the agent and spent the launch token, so it is reported, not resent.
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/challenge":
            return httpx.Response(200, json={"nonce": NONCE, "expires_in": 30})
        sent.append(request)
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(TransportError):
        Agent.register(URL, "f" * 64, "o", "t", ["read:x:*"], transport=httpx.MockTransport(answer))
    assert len(sent) == 1


def test_only_a_refusal_asking_for_a_dpop_nonce_is_resent() -> None:
    # A server may hand out its next nonce with any answer; only a 400 or 401 refusing
    # the request for want of it means the request was not acted on and is resent.
    key = DPoPKey()
    request = httpx.Request("POST", "https://rs.example/v1/orders")
    asks = {"DPoP-Nonce": "n-1", "WWW-Authenticate": 'DPoP error="use_dpop_nonce"'}
    done = httpx.Response(201, headers=asks, json={"error": "use_dpop_nonce"}, request=request)
    assert key.observe(done) is False
    assert key.nonce_for(request.url) == "n-1"
    refused = httpx.Response(401, headers={**asks, "DPoP-Nonce": "n-2"}, request=request)
    assert key.observe(refused) is True
    assert key.nonce_for(request.url) == "n-2"


def test_a_request_refused_for_a_dpop_nonce_is_resent_once() -> None:
    # A server that asks for a new nonce at every try gets the request twice, then the
    # refusal is reported: the SDK does not loop on it.
    proofs: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/challenge":
            return httpx.Response(200, json={"nonce": NONCE, "expires_in": 30})
        proofs.append(request.headers["dpop"])  # the same request, re-bound
        assert len(proofs) <= 3, "resent again and again"
        body = {"error": "use_dpop_nonce", "error_description": "use this nonce"}
        headers = {
            "DPoP-Nonce": f"nonce-{len(proofs)}",
            "WWW-Authenticate": 'DPoP error="use_dpop_nonce"',
        }
        return httpx.Response(401, json=body, headers=headers)

    transport = httpx.MockTransport(answer)
    with pytest.raises(TaskleaseError):
        Agent.register(URL, "f" * 64, "o", "t", ["read:x:*"], transport=transport, dpop=True)
    assert len(proofs) == 2
    assert proofs[0] != proofs[1]
