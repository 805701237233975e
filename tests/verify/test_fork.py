"""A verifier and the SDK's clients across ``os.fork()`` (a pre-forking server's workers):
the child opens connections of its own, follows the revocation feed again, and is not
blocked by a lock another thread of the parent held at the fork (``tasklease.forksafe``).

Each test forks for real; the child reports over a pipe and leaves with ``os._exit``.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import nacl.signing
import pytest
from e2e_support import RunningBroker
from verify_support import admin_source

from tasklease.client import AppClient
from tasklease.client._bounded import bounded_async_client
from tasklease.rules import jws
from tasklease.verify import InvalidToken, Verifier

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")


def in_child(work: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Fork; the child runs ``work`` and sends back its result (or its error, as text);
    a child that does not answer within ``timeout`` is killed and the test fails."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        os.close(read)
        try:
            answer = {"ok": work()}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write, json.dumps(answer, default=str).encode())
        os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            raise AssertionError(f"the child did not answer within {timeout} s (blocked)")
        data = b""
        while chunk := os.read(read, 65536):
            data += chunk
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    answer = json.loads(data)
    assert "error" not in answer, answer["error"]
    return answer["ok"]


@dataclass
class Recorder:
    """A keep-alive HTTP server that answers every GET with an empty JWK Set, and records
    the client port of each request."""

    url: str = ""
    seen: list[int] = field(default_factory=list)
    hold: threading.Event | None = None  # when set up, the next answer waits for it
    entered: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            rec.seen.append(self.client_address[1])
            hold, rec.hold = rec.hold, None
            rec.entered.set()
            if hold is not None:
                hold.wait(5)
            body = json.dumps({"keys": []}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield rec
    server.shutdown()
    server.server_close()


def _unknown_kid_token() -> str:
    """A token signed by a key no JWKS lists: verifying it fetches the JWKS again."""
    key = nacl.signing.SigningKey.generate()
    now = int(time.time())
    claims = {"iss": "tasklease", "sub": "x", "aud": "svc", "iat": now, "exp": now + 60}
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return jws.encode(payload, typ="at+jwt", kid=jws.jwk_thumbprint(bytes(key.verify_key)), key=key)


def _fetch_keys(verifier: Verifier) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(_unknown_kid_token())


def test_a_forked_verifier_opens_its_own_connection(recorder: Recorder) -> None:
    verifier = Verifier(
        recorder.url, audience="svc", feed=False, jwks_min_refresh_interval=0, timeout=2
    )
    verifier.start()
    _fetch_keys(verifier)
    parent_port = recorder.seen[-1]
    assert recorder.seen == [parent_port, parent_port]  # one keep-alive connection

    def child() -> None:
        _fetch_keys(verifier)

    in_child(child)
    _fetch_keys(verifier)  # the parent's connection still serves the parent alone
    assert len(recorder.seen) == 4
    child_port = recorder.seen[2]
    assert child_port != parent_port, "the child sent on the parent's connection"
    assert recorder.seen[3] == parent_port
    verifier.close()


def test_a_forked_sdk_client_opens_its_own_connection(recorder: Recorder) -> None:
    app = AppClient(recorder.url, "app", client_secret="secret")
    app.health()
    parent_port = recorder.seen[-1]
    in_child(app.health)
    app.health()
    assert recorder.seen[1] != parent_port, "the child sent on the parent's connection"
    assert recorder.seen[2] == parent_port
    app.close()


def test_a_forked_async_client_opens_its_own_connection(recorder: Recorder) -> None:
    client = bounded_async_client(base_url=recorder.url, timeout=2)

    async def get() -> None:
        answer = await client.get("/")
        answer.raise_for_status()

    async def parent() -> None:
        await get()
        # Forked from a thread of its own: the child runs its own event loop.
        await asyncio.to_thread(in_child, lambda: asyncio.run(get()))
        await get()
        await client.aclose()

    asyncio.run(parent())
    assert recorder.seen[1] != recorder.seen[0], "the child used the parent's connection"
    assert recorder.seen[2] == recorder.seen[0]


def test_an_unknown_kid_does_not_block_on_a_fetch_the_parent_had_under_way(
    recorder: Recorder,
) -> None:
    verifier = Verifier(
        recorder.url, audience="svc", feed=False, jwks_min_refresh_interval=0, timeout=3
    )
    verifier.start()
    release = recorder.hold = threading.Event()
    recorder.entered.clear()
    fetching = threading.Thread(target=_fetch_keys, args=(verifier,), daemon=True)
    fetching.start()  # holds the key set's lock while the answer waits
    assert recorder.entered.wait(2)
    started = time.monotonic()

    def child() -> float:
        _fetch_keys(verifier)  # answered at once (by the parent's server: only one waits)
        return time.monotonic() - started

    elapsed = in_child(child, timeout=4)
    assert elapsed < 3
    release.set()
    fetching.join(5)
    verifier.close()


def test_a_forked_verifier_follows_revocations_made_after_the_fork(
    broker: RunningBroker,
) -> None:
    verifier = Verifier(
        broker.url,
        audience="svc-a",
        credentials=admin_source(broker),
        max_feed_staleness=30,
        feed_liveness=0.5,  # close() waits no longer for the stream's next line
    )
    assert verifier.start()
    agent = broker.register(["read:data:1"])
    assert verifier.verify(agent.access_token).jti
    go_read, go_write = os.pipe()

    def child() -> dict[str, Any]:
        os.close(go_write)
        live_at_fork = verifier.feed_live()
        assert os.read(go_read, 1) == b"g"  # the parent revoked the agent
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                verifier.verify(agent.access_token)
            except InvalidToken as exc:
                return {"refused": exc.reason, "live_at_fork": live_at_fork}
            time.sleep(0.02)
        return {"refused": None, "live_at_fork": live_at_fork}

    def revoke_then_go() -> None:
        time.sleep(0.1)  # the child is past the fork
        assert broker.revoke("agent", agent.agent_id).status_code == 200
        os.write(go_write, b"g")

    reviser = threading.Thread(target=revoke_then_go, daemon=True)
    reviser.start()
    answer = in_child(child, timeout=8)
    reviser.join(5)
    os.close(go_read)
    os.close(go_write)
    assert answer["refused"] is not None, "the child never applied the revocation"
    assert "revoked" in answer["refused"]
    assert answer["live_at_fork"] is False  # the stream is the parent's, not the child's
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(agent.access_token)
    assert "revoked" in refused.value.reason
    verifier.close()
