"""A signing key removed from the broker's JWKS stops verifying at resource servers
(decision 143): a key is usable only while the last successful fetch of the JWKS lists it.

Against a real broker over loopback HTTP, keys changed as an operator changes them after a
compromise (docs/operations.md): ``tasklease keys rotate``, then the old key's file removed
from the key directory, which the broker adopts within a second. Each path that used to
keep the removed key: a) a token the verifier remembers, b) the token whose verification
fetches the JWKS again, c) the async path without a feed (which never fetched by age); each
through the sync verifier and through the async path (ASGI middleware, MCP server). And a
fetch that fails (the broker down) keeps the last good set.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import (
    SHARED_ENV,
    RunningBroker,
    free_port,
    launch_broker,
    run_cli,
    stop_broker,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from verify_support import Served, app_credentials, poll

from tasklease.verify import InvalidToken, KeySetStale, Verifier, VerifierUnavailable
from tasklease.verify.asgi import TaskleaseAuthMiddleware

pytestmark = pytest.mark.slow

TTL = 1.0  # the verifiers' jwks_ttl here
MIN_INTERVAL = 0.2
RESOURCE_PORT = free_port()
RESOURCE = f"http://127.0.0.1:{RESOURCE_PORT}/mcp"  # the MCP server's audience
_MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker whose keys these tests rotate and remove (its own: the others' tokens and
    keys are left alone). Tokens naming no resource are for svc-a."""
    env = {**SHARED_ENV, "TASKLEASE_AUDIENCE": f"svc-a,{RESOURCE}"}
    running = launch_broker(tmp_path_factory.mktemp("key-removal"), env)
    yield running
    stop_broker(running)


_OPEN: list[Verifier] = []


@pytest.fixture(autouse=True)
def _close_verifiers() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def jwks_kids(broker: RunningBroker) -> list[str]:
    answer = broker.get("/.well-known/jwks.json")
    answer.raise_for_status()
    return [key["kid"] for key in answer.json()["keys"]]


def rotate_and_remove(broker: RunningBroker, home: Path) -> tuple[str, str]:
    """What an operator does after a compromise: ``tasklease keys rotate``, then delete
    every key file but the new active one from the key directory. Returns ``(removed kid,
    new kid)`` once the broker's JWKS lists the new key alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "TASKLEASE_URL": broker.url,
            "TASKLEASE_ADMIN_SECRET": broker.admin_secret,
        }
    )
    done = run_cli(["keys", "rotate", "--json"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    new, old = answer["kid"], answer["previous_kid"]
    assert old in jwks_kids(broker)  # rotated: the old key still verifies
    files = sorted((broker.data_dir / "keys").glob("signing-*.pem"))
    assert len(files) >= 2
    for retired in files[:-1]:  # the newest file is the active key
        retired.unlink()
    poll(lambda: jwks_kids(broker) == [new], timeout=10.0)
    broker._admin_token = None  # the helper's admin token was signed by the removed key
    return old, new


def verifier_for(broker: RunningBroker, *, feed: bool, audience: str = "svc-a") -> Verifier:
    options: dict[str, Any] = {"credentials": app_credentials(broker)} if feed else {}
    verifier = Verifier(
        broker.url,
        audience=audience,
        feed=feed,
        jwks_ttl=TTL,
        jwks_min_refresh_interval=MIN_INTERVAL,
        **options,
    )
    _OPEN.append(verifier)
    assert verifier.start()
    return verifier


def older_than_ttl(verifier: Verifier) -> None:
    """Wait until ``verifier``'s key set, fetched at its start, is older than jwks_ttl
    (what sleeping ``TTL`` after the start did, without the sleep when it already is)."""
    poll(lambda: verifier.jwks_age() >= TTL, timeout=TTL + 5.0)


def refused(verifier: Verifier, token: str) -> str:
    """The reason the sync verifier refuses ``token`` (fails the test if it accepts it)."""
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    return caught.value.reason


# --- the async path: the ASGI middleware and an MCP server, served by uvicorn ----------------


def asgi_app(verifier: Verifier) -> Any:
    async def read(request: Request) -> Response:
        return JSONResponse({"sub": request.state.tasklease_token.sub})

    return Starlette(
        routes=[Route("/data/42", read)],
        middleware=[Middleware(TaskleaseAuthMiddleware, verifier=verifier)],
    )


def mcp_app(verifier: Verifier, broker_url: str) -> Any:
    pytest.importorskip("mcp")
    from mcp.server.mcpserver import MCPServer

    from tasklease.verify.mcp import TaskleaseTokenVerifier, auth_settings

    server = MCPServer(
        "tools",
        token_verifier=TaskleaseTokenVerifier(verifier),
        auth=auth_settings(broker_url, RESOURCE),
    )

    @server.tool()
    def echo(text: str) -> str:
        return text

    return server.streamable_http_app(json_response=True, stateless_http=True)


class AsyncPath:
    """A resource server on the async path (``kind``: ``asgi`` or ``mcp``) in front of a
    verifier; :meth:`status` is the HTTP status a request with a token gets."""

    def __init__(
        self, kind: str, broker: RunningBroker, serve: Callable[..., Served], *, feed: bool
    ) -> None:
        self.kind = kind
        self.broker = broker
        if kind == "asgi":
            self.verifier = verifier_for(broker, feed=feed)
            self.served = serve(asgi_app(self.verifier))
        else:
            self.verifier = verifier_for(broker, feed=feed, audience=RESOURCE)
            self.served = serve(mcp_app(self.verifier, broker.url), RESOURCE_PORT)

    def token(self) -> str:
        """A new agent's token for this resource, signed by the broker's active key."""
        extra: dict[str, Any] = {} if self.kind == "asgi" else {"resource": [RESOURCE]}
        return self.broker.register(["read:data:42"], **extra).access_token

    def status(self, token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=self.served.url, timeout=10) as client:
            if self.kind == "asgi":
                return client.get("/data/42", headers=headers).status_code
            answer = client.post("/mcp", json=_INITIALIZE, headers={**_MCP_HEADERS, **headers})
            return answer.status_code


ASYNC_KINDS = pytest.mark.parametrize("kind", ["asgi", "mcp"])


# --- a) a remembered token --------------------------------------------------------------------


def test_a_remembered_token_stops_verifying_once_its_key_is_removed(
    keyed: RunningBroker, tmp_path: Path
) -> None:
    verifier = verifier_for(keyed, feed=True)
    agent = keyed.register(["read:data:42"])
    assert verifier.verify(agent.access_token).sub == agent.agent_id
    assert verifier.stats()["cached_tokens"] == 1  # remembered
    old, new = rotate_and_remove(keyed, tmp_path)
    # The feed's housekeeping fetches the JWKS once it is older than jwks_ttl.
    poll(lambda: verifier.stats()["kids"] == [new], timeout=TTL + 8.0)
    assert refused(verifier, agent.access_token) == "unknown kid"
    assert refused(verifier, agent.access_token) == "unknown kid"  # not remembered again
    fresh = keyed.register(["read:data:42"])  # signed by the new key
    assert verifier.verify(fresh.access_token).sub == fresh.agent_id


@ASYNC_KINDS
def test_a_remembered_token_stops_verifying_on_the_async_path(
    kind: str, keyed: RunningBroker, serve: Any, tmp_path: Path
) -> None:
    path = AsyncPath(kind, keyed, serve, feed=True)
    token = path.token()
    assert path.status(token) == 200
    assert path.verifier.stats()["cached_tokens"] == 1
    _old, new = rotate_and_remove(keyed, tmp_path)
    poll(lambda: path.verifier.stats()["kids"] == [new], timeout=TTL + 8.0)
    assert path.status(token) == 401
    assert path.status(path.token()) == 200


# --- b) the token whose verification fetches the JWKS again -------------------------------


def test_b_the_token_that_starts_a_refresh_is_judged_by_the_refreshed_set(
    keyed: RunningBroker, tmp_path: Path
) -> None:
    verifier = verifier_for(keyed, feed=False)
    agent = keyed.register(["read:data:42"])  # never shown to the verifier before
    old, new = rotate_and_remove(keyed, tmp_path)
    older_than_ttl(verifier)  # the verifier's set, fetched at start, is due by age now
    assert old in verifier.stats()["kids"]
    fetches = verifier.stats()["jwks_fetches"]
    assert refused(verifier, agent.access_token) == "unknown kid"
    assert verifier.stats()["jwks_fetches"] == fetches + 1  # this verification fetched it
    assert verifier.stats()["kids"] == [new]
    fresh = keyed.register(["read:data:42"])
    assert verifier.verify(fresh.access_token).sub == fresh.agent_id


@ASYNC_KINDS
def test_b_the_request_that_starts_a_refresh_is_judged_by_the_refreshed_set(
    kind: str, keyed: RunningBroker, serve: Any, tmp_path: Path
) -> None:
    path = AsyncPath(kind, keyed, serve, feed=False)
    token = path.token()  # never shown to the verifier before
    old, new = rotate_and_remove(keyed, tmp_path)
    older_than_ttl(path.verifier)
    assert old in path.verifier.stats()["kids"]
    fetches = path.verifier.stats()["jwks_fetches"]
    assert path.status(token) == 401
    assert path.verifier.stats()["jwks_fetches"] > fetches
    assert path.verifier.stats()["kids"] == [new]
    assert path.status(path.token()) == 200


# --- c) no feed: the verifications themselves fetch the JWKS by age -----------------------


def test_c_without_a_feed_a_remembered_token_stops_verifying_after_jwks_ttl(
    keyed: RunningBroker, tmp_path: Path
) -> None:
    verifier = verifier_for(keyed, feed=False)
    agent = keyed.register(["read:data:42"])
    assert verifier.verify(agent.access_token).sub == agent.agent_id
    _old, new = rotate_and_remove(keyed, tmp_path)
    # Only the remembered token is presented: its uses alone must fetch the JWKS by age.
    deadline = time.monotonic() + TTL + 5.0
    while True:
        try:
            verifier.verify(agent.access_token)
        except InvalidToken as exc:
            assert exc.reason == "unknown kid"
            break
        assert time.monotonic() < deadline, "the removed key still verifies"
        time.sleep(0.05)
    assert verifier.stats()["kids"] == [new]


@ASYNC_KINDS
def test_c_without_a_feed_the_async_path_fetches_the_jwks_by_age(
    kind: str, keyed: RunningBroker, serve: Any, tmp_path: Path
) -> None:
    path = AsyncPath(kind, keyed, serve, feed=False)
    remembered = path.token()
    assert path.status(remembered) == 200
    unseen = path.token()
    _old, new = rotate_and_remove(keyed, tmp_path)
    older_than_ttl(path.verifier)
    assert path.status(remembered) == 401
    assert path.status(unseen) == 401
    assert path.verifier.stats()["kids"] == [new]
    assert path.status(path.token()) == 200


# --- a failed fetch keeps the last good set -----------------------------------------------------


def test_a_failed_fetch_keeps_the_last_good_set(own_broker: RunningBroker) -> None:
    verifier = verifier_for(own_broker, feed=False)
    kids = verifier.stats()["kids"]
    remembered = own_broker.register(["read:data:42"]).access_token
    unseen = own_broker.register(["read:data:42"]).access_token
    unseen_async = own_broker.register(["read:data:42"]).access_token
    verifier.verify(remembered)
    fetches = verifier.stats()["jwks_fetches"]
    stop_broker(own_broker)
    older_than_ttl(verifier)  # due for a fetch by age, which fails: the broker is down
    assert verifier.verify(remembered).jti
    assert verifier.verify(unseen).jti
    assert verifier.stats()["jwks_fetches"] == fetches + 1  # tried once, failed
    time.sleep(MIN_INTERVAL)  # a failed fetch is tried again after the minimum interval

    async def on_the_event_loop() -> str:
        return (await verifier.averify(unseen_async)).jti

    assert asyncio.run(on_the_event_loop())
    assert verifier.stats()["jwks_fetches"] == fetches + 2
    assert verifier.stats()["kids"] == kids


# --- d) no successful fetch for jwks_max_stale: every verification fails closed ---------------


def test_d_a_key_set_not_refreshed_for_jwks_max_stale_fails_closed_until_a_fetch_succeeds(
    own_broker: RunningBroker, serve: Any
) -> None:
    """TM-61: a verifier cut off from the broker keeps its last good key set for
    ``jwks_max_stale`` seconds, not for as long as it runs: past it, the sync path raises
    ``KeySetStale`` and the ASGI middleware answers 503 ``key_set_stale`` (a remembered
    token, a token never seen, without a feed); once the broker answers again, the next
    verifications fetch the set and accept again."""
    max_age = TTL + 1.5
    verifier = Verifier(
        own_broker.url,
        audience="svc-a",
        feed=False,
        jwks_ttl=TTL,
        jwks_min_refresh_interval=MIN_INTERVAL,
        jwks_max_stale=max_age,
    )
    _OPEN.append(verifier)
    assert verifier.start() and verifier.ready
    served = serve(asgi_app(verifier))
    remembered = own_broker.register(["read:data:42"]).access_token
    unseen = own_broker.register(["read:data:42"]).access_token
    assert verifier.verify(remembered).jti
    port = int(own_broker.url.rsplit(":", 1)[1])
    stop_broker(own_broker)

    def status(token: str) -> httpx.Response:
        with httpx.Client(base_url=served.url, timeout=10) as client:
            return client.get("/data/42", headers={"Authorization": f"Bearer {token}"})

    assert verifier.verify(remembered).jti  # within the bound: the last good set serves
    poll(lambda: verifier.jwks_age() > max_age, timeout=max_age + 5.0)
    assert not verifier.ready
    for token in (remembered, unseen):
        with pytest.raises(KeySetStale) as caught:
            verifier.verify(token)
        assert isinstance(caught.value, VerifierUnavailable)
        answer = status(token)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error_code"] == "key_set_stale"
        assert "signing keys are stale" in answer.json()["detail"]
        assert answer.headers["retry-after"] == "1"
    assert "tasklease_verifier_jwks_age_seconds{" in verifier.metrics_text()
    env = {**SHARED_ENV, "TASKLEASE_AUDIENCE": "svc-a"}
    back = launch_broker(own_broker.data_dir, env, port=port)
    try:
        poll(lambda: status(unseen).status_code == 200, timeout=MIN_INTERVAL + 10.0)
        assert verifier.verify(remembered).jti and verifier.ready
        assert verifier.jwks_age() < max_age
    finally:
        stop_broker(back)


def test_jwks_max_stale_must_exceed_jwks_ttl() -> None:
    with pytest.raises(ValueError, match="jwks_max_stale"):
        Verifier(
            "http://127.0.0.1:9", audience="svc-a", feed=False, jwks_ttl=300, jwks_max_stale=300
        )
