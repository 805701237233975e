"""By-reference tokens (too large to sign: many scopes, long chains) resolved by the verifier
through the broker's RFC 7662 introspection, with a bounded cache, over loopback HTTP."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import pytest
from e2e_support import Agent, RunningBroker, assert_problem
from test_verifier_http import protected_app
from verify_support import Served, admin_source, poll

from tasklease.verify import InvalidToken, Verifier

pytestmark = pytest.mark.slow


def _many_scopes(n: int) -> list[str]:
    # As tests/security: 60 long scopes push the JWT past the broker's 4 KB threshold.
    return ["read:data:42", *(f"read:dataset-{i:04d}-with-a-rather-long-name:*" for i in range(n))]


def _big_agent(broker: RunningBroker) -> Agent:
    agent = broker.register(_many_scopes(60))
    assert agent.access_token.startswith("tlr_") and len(agent.access_token) == 47
    return agent


def _verifier(broker: RunningBroker, **kwargs: Any) -> Verifier:
    kwargs.setdefault("audience", "svc-a")
    return Verifier(broker.url, credentials=admin_source(broker), **kwargs)


def test_middleware_accepts_a_by_reference_token_and_refuses_it_after_revocation(
    broker: RunningBroker, serve: Any
) -> None:
    verifier = _verifier(broker, max_feed_staleness=5.0)
    service: Served = serve(protected_app(verifier))
    agent = _big_agent(broker)
    with httpx.Client(base_url=service.url) as client:
        ok = client.get("/data/42", headers=agent.bearer)
        assert ok.status_code == 200, ok.text
        assert ok.json()["sub"] == agent.agent_id
        assert len(ok.json()["scope"]) == 61
        # Cached: further requests do not introspect again.
        for _ in range(5):
            assert client.get("/data/42", headers=agent.bearer).status_code == 200
        assert verifier.stats()["introspections"] == 1
        assert verifier.stats()["cached_references"] == 1
        denied = client.post("/data/42/write", headers=agent.bearer)
        assert_problem(denied, 403, "insufficient_scope")

        verified = verifier.verify(agent.access_token)
        assert verified.by_reference
        assert verified.has_scope("read:dataset-0007-with-a-rather-long-name:x")
        assert broker.revoke("token", verified.jti).status_code == 200
        elapsed = poll(
            lambda: client.get("/data/42", headers=agent.bearer).status_code == 401,
            timeout=verifier.max_feed_staleness,
        )
        assert elapsed < verifier.max_feed_staleness
        assert verifier.stats()["cached_references"] == 0
        # Not served from anywhere any more: the broker also says inactive now.
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(agent.access_token)
        assert caught.value.reason in (
            "by-reference token is not active",
            "token has been revoked (level token)",
        )


def test_an_unknown_opaque_token_is_refused(broker: RunningBroker, serve: Any) -> None:
    verifier = _verifier(broker)
    service: Served = serve(protected_app(verifier))
    unknown = "tlr_" + secrets.token_urlsafe(32)
    with httpx.Client(base_url=service.url) as client:
        refused = client.get("/data/42", headers={"Authorization": f"Bearer {unknown}"})
        assert_problem(refused, 401, "unauthorized")
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(unknown)
    assert caught.value.reason == "by-reference token is not active"
    assert verifier.stats()["cached_references"] == 0
    verifier.close()


def test_a_by_reference_token_for_another_audience_is_refused(broker: RunningBroker) -> None:
    agent = _big_agent(broker)
    with _verifier(broker, audience="svc-z") as verifier, pytest.raises(InvalidToken):
        verifier.verify(agent.access_token)


def test_the_introspection_cache_is_bounded(broker: RunningBroker) -> None:
    agents = [_big_agent(broker) for _ in range(3)]
    with _verifier(broker, introspection_cache_size=2) as verifier:
        for agent in agents:
            assert verifier.verify(agent.access_token).sub == agent.agent_id
        assert verifier.stats()["cached_references"] == 2
        assert verifier.stats()["introspections"] == 3
        verifier.verify(agents[2].access_token)  # most recent: cached
        assert verifier.stats()["introspections"] == 3
        verifier.verify(agents[0].access_token)  # evicted: introspected again
        assert verifier.stats()["introspections"] == 4
        assert verifier.stats()["cached_references"] == 2


def test_async_path_introspects_in_a_thread(broker: RunningBroker) -> None:
    agent = _big_agent(broker)
    verifier = _verifier(broker)

    async def scenario() -> None:
        assert await verifier.astart()
        assert (await verifier.averify(agent.access_token)).sub == agent.agent_id
        assert (await verifier.averify(agent.access_token)).by_reference
        await verifier.aclose()

    asyncio.run(scenario())
    assert verifier.stats()["introspections"] == 1


def test_without_credentials_by_reference_tokens_are_refused(broker: RunningBroker) -> None:
    agent = _big_agent(broker)
    with Verifier(broker.url, audience="svc-a", feed=False) as verifier:
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(agent.access_token)
        assert caught.value.reason == "by-reference token but no introspection credentials"
