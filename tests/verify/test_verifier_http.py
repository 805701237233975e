"""The verifier against a live broker, and its middleware in a real Starlette app, over
loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import httpx
import pytest
from e2e_support import RunningBroker, assert_problem, b64url, stop_broker
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from verify_support import CountingTransport, Served, app_credentials, poll

from tasklease.verify import (
    InvalidToken,
    Verifier,
    VerifierUnavailable,
)
from tasklease.verify.asgi import TaskleaseAuthMiddleware, require_scope

pytestmark = pytest.mark.slow


def protected_app(verifier: Verifier, **options: Any) -> Starlette:
    """``/data/42`` behind the middleware (``options`` its own: ``origins``, ...)."""

    @require_scope("read:data:42")
    async def read(request: Request) -> Response:
        token = request.state.tasklease_token
        return JSONResponse({"sub": token.sub, "scope": list(token.scope)})

    @require_scope("write:data:42")
    async def write(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/data/42", read), Route("/data/42/write", write, methods=["POST"])],
        middleware=[Middleware(TaskleaseAuthMiddleware, verifier=verifier, **options)],
    )


def new_verifier(broker: RunningBroker, **kwargs: Any) -> Verifier:
    kwargs.setdefault("audience", "svc-a")
    return Verifier(broker.url, credentials=app_credentials(broker), **kwargs)


def test_middleware_accepts_a_valid_token_and_refuses_wrong_scope_and_bad_tokens(
    broker: RunningBroker, serve: Any
) -> None:
    verifier = new_verifier(broker)
    service: Served = serve(protected_app(verifier))
    agent = broker.register(["read:data:42"])
    with httpx.Client(base_url=service.url) as client:
        ok = client.get("/data/42", headers=agent.bearer)
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"sub": agent.agent_id, "scope": ["read:data:42"]}

        denied = client.post("/data/42/write", headers=agent.bearer)
        assert_problem(denied, 403, "insufficient_scope")
        assert 'scope="write:data:42"' in denied.headers["www-authenticate"]

        for headers in ({}, {"Authorization": "Bearer not.a.token"}, {"Authorization": "Basic x"}):
            refused = client.get("/data/42", headers=headers)
            body = assert_problem(refused, 401, "unauthorized")
            assert body["detail"] == "token verification failed"  # never the reason
            assert refused.headers["www-authenticate"].startswith("Bearer")
    assert verifier.stats()["jwks_fetches"] == 1


def test_a_token_for_another_audience_is_refused(broker: RunningBroker, serve: Any) -> None:
    # A token that names no resource is for svc-a, the first configured audience.
    verifier = new_verifier(broker, audience="svc-z")
    service: Served = serve(protected_app(verifier))
    agent = broker.register(["read:data:42"])
    with httpx.Client(base_url=service.url) as client:
        assert_problem(client.get("/data/42", headers=agent.bearer), 401, "unauthorized")
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(agent.access_token)
    assert caught.value.reason == "audience mismatch"
    assert str(caught.value) == "token verification failed"
    verifier.close()


def test_a_token_revoked_at_the_broker_is_refused_within_the_feed_bound(
    broker: RunningBroker, serve: Any
) -> None:
    verifier = new_verifier(broker, max_feed_staleness=5.0)
    service: Served = serve(protected_app(verifier))
    agent = broker.register(["read:data:42"])
    other = broker.register(["read:data:42"])
    with httpx.Client(base_url=service.url) as client:
        assert client.get("/data/42", headers=agent.bearer).status_code == 200  # now cached
        jti = json.loads(_payload(agent.access_token))["jti"]
        assert broker.revoke("token", jti).status_code == 200
        elapsed = poll(
            lambda: client.get("/data/42", headers=agent.bearer).status_code == 401,
            timeout=verifier.max_feed_staleness,
        )
        assert elapsed < verifier.max_feed_staleness
        assert client.get("/data/42", headers=other.bearer).status_code == 200
        # Task level, through the verifier directly.
        assert broker.revoke("task", other.task_id).status_code == 200
        poll(lambda: _refused(verifier, other.access_token), timeout=5.0)


def test_an_unknown_kid_triggers_exactly_one_jwks_refresh(broker: RunningBroker) -> None:
    transport = CountingTransport()
    verifier = new_verifier(broker, transport=transport)
    assert verifier.start()
    assert transport.counts["/.well-known/jwks.json"] == 1
    agent = broker.register(["read:data:42"])
    verifier.verify(agent.access_token)
    for _ in range(25):  # a flood of tokens naming invented keys
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(_forged(agent.access_token, kid=b64url(secrets.token_bytes(32))))
        assert caught.value.reason == "unknown kid"
    assert transport.counts["/.well-known/jwks.json"] == 2
    verifier.verify(agent.access_token)  # known keys still verify
    assert transport.counts["/.well-known/jwks.json"] == 2
    verifier.close()


def test_async_path_refreshes_once_too(broker: RunningBroker) -> None:
    transport = CountingTransport()
    verifier = new_verifier(broker, transport=transport)
    agent = broker.register(["read:data:42"])

    async def scenario() -> None:
        assert await verifier.astart()
        assert (await verifier.averify(agent.access_token)).sub == agent.agent_id
        for _ in range(5):
            with pytest.raises(InvalidToken):
                await verifier.averify(_forged(agent.access_token, kid="k" * 43))
        await verifier.aclose()

    asyncio.run(scenario())
    assert transport.counts["/.well-known/jwks.json"] == 2


def test_a_stale_feed_fails_closed_after_the_bound(own_broker: RunningBroker, serve: Any) -> None:
    bound = 1.5
    verifier = new_verifier(own_broker, max_feed_staleness=bound)
    service: Served = serve(protected_app(verifier))
    agent = own_broker.register(["read:data:42"])
    with httpx.Client(base_url=service.url) as client:
        assert client.get("/data/42", headers=agent.bearer).status_code == 200
        stopped = time.monotonic()
        stop_broker(own_broker)
        poll(lambda: _unavailable(verifier, agent.access_token), timeout=bound + 2.0)
        assert time.monotonic() - stopped <= bound + 2.0
        refused = client.get("/data/42", headers=agent.bearer)
        assert refused.status_code == 503
        body = refused.json()
        assert body["error_code"] == "revocation_state_stale"
        assert body["detail"].startswith("revocation state is stale: nothing heard from")
        assert "the limit is 1.5 s" in body["detail"]
        assert refused.headers["retry-after"] == "1"


def test_verifier_without_credentials_for_the_feed_is_refused() -> None:
    with pytest.raises(ValueError, match="credentials"):
        Verifier("http://127.0.0.1:1", audience="svc-a")


# --- helpers ---------------------------------------------------------------------------


def _payload(token: str) -> str:
    import base64

    segment = token.split(".")[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode()


def _forged(token: str, *, kid: str) -> str:
    header = b64url(json.dumps({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}).encode())
    _, payload, signature = token.split(".")
    return f"{header}.{payload}.{signature}"


def _refused(verifier: Verifier, token: str) -> bool:
    try:
        verifier.verify(token)
    except InvalidToken:
        return True
    return False


def _unavailable(verifier: Verifier, token: str) -> bool:
    try:
        verifier.verify(token)
    except VerifierUnavailable:
        return True
    return False
