"""Release is reported done only when the token is: a 2xx, or a 401 ``invalid_token``
(the token was already unusable). Any other refusal leaves the token live: release
raises, and a later release sends the request again."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tasklease.client import Agent, TaskleaseError

NONCE = "00" * 32
URL = "https://broker.example"
AGENT_ID = "spiffe://example.org/agent/o/t/1"


def _broker(release_answers: list[httpx.Response]) -> tuple[httpx.MockTransport, list[str]]:
    released: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body: dict[str, Any]
        if request.url.path == "/v1/challenge":
            body = {"nonce": NONCE, "expires_in": 30}
        elif request.url.path == "/v1/register":
            body = {"agent_id": AGENT_ID, "access_token": "a.b.c", "expires_in": 300}
        else:
            assert request.url.path == "/v1/token/release"
            released.append(request.headers["authorization"])
            return release_answers.pop(0)
        return httpx.Response(200, json=body)

    return httpx.MockTransport(answer), released


@pytest.mark.parametrize("status", [400, 403])
def test_invalid_token_with_another_status_than_401_is_not_a_release(status: int) -> None:
    refusal = httpx.Response(status, json={"error": "invalid_token", "status": status})
    transport, released = _broker([refusal, httpx.Response(204)])
    agent = Agent.register(URL, "f" * 64, "o", "t", ["read:x:*"], transport=transport)
    try:
        with pytest.raises(TaskleaseError) as refused:
            agent.release()
        assert refused.value.status == status
        agent.release()  # not recorded as released: sent again, and done this time
        agent.release()  # now it is: nothing more is sent
        assert released == ["Bearer a.b.c", "Bearer a.b.c"]
    finally:
        agent.close()


def test_a_401_invalid_token_counts_as_released() -> None:
    gone = httpx.Response(401, json={"error": "invalid_token", "status": 401})
    transport, released = _broker([gone])
    agent = Agent.register(URL, "f" * 64, "o", "t", ["read:x:*"], transport=transport)
    try:
        agent.release()
        agent.release()
        assert released == ["Bearer a.b.c"]
    finally:
        agent.close()
