# Would fail if: a revocation stream opened on a tenant outlived the tenant's removal
# (kept beating, so a resource server following it kept taking it as current and kept
# accepting the removed tenant's tokens), on the worker that removed it or on another one;
# or if ending them touched the streams of a tenant still served or of the default tenant.
"""TM-36 — a removed tenant's revocation feed goes quiet on every worker.

``tasklease serve --workers 2``: streams on one tenant are held by each worker, the tenant
is removed through one of them, and every one of its streams ends within a few seconds
(the other worker learns of the removal from the tenant registry, which it reads again
every second) while the streams of another tenant and of the default tenant go on. A
verifier following the removed tenant's feed then fails closed past its staleness bound.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Iterator
from unittest.mock import patch

import pytest
from e2e_support import SHARED_ENV, RunningBroker, jwt_parts, launch_broker, stop_broker
from worker_procs import ESTABLISHED, socket_inodes, tcp_inodes, wait_workers_listening

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.storage import MemoryStore
from tasklease.tenancy import RECHECK, Tenancy
from tasklease.verify import AppCredentials, RevocationStateStale, Verifier

pytestmark = pytest.mark.slow

SCOPE = ["read:tickets:*"]
# Seconds a removed tenant's stream may still run: the registry is read again every
# second by each worker, and a stream ends as soon as its worker notices. The bound only
# ends a failure.
ENDS_WITHIN = 5.0
# The broker beats every 2 s: a stream still served shows a keepalive within this.
BEATS_WITHIN = 5.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    running = launch_broker(
        tmp_path_factory.mktemp("removed-tenant-feed"), SHARED_ENV, args=("--workers", "2")
    )
    port = int(running.url.rsplit(":", 1)[1])
    wait_workers_listening(running.proc.pid, port, 2, timeout=30)
    yield running
    stop_broker(running)


class Stream:
    """One revocation stream, read over a raw connection (to tell which worker holds it)."""

    def __init__(self, broker: RunningBroker, path: str, token: str) -> None:
        self.port = int(broker.url.rsplit(":", 1)[1])
        self.conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.conn.sendall(
            f"GET {path} HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        self.received = b""
        self.ended = False
        self.read_until(b"event: sync", within=10.0)
        assert self.received.startswith(b"HTTP/1.1 200"), self.received[:200]

    def worker(self, workers: set[int]) -> int:
        """The worker process holding the server side of this stream."""
        inodes = tcp_inodes(self.port, ESTABLISHED, remote_port=self.conn.getsockname()[1])
        for pid in workers:
            if socket_inodes(pid) & inodes:
                return pid
        raise AssertionError(f"no worker holds the stream on {self.conn.getsockname()[1]}")

    def read_until(self, marker: bytes, *, within: float) -> bool:
        """Read until ``marker`` has come after what was read so far, or the server
        closed the connection (False), within ``within`` seconds (then fails)."""
        start = len(self.received)
        deadline = time.monotonic() + within
        while marker not in self.received[start:]:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} in {within:g} s: {self.received[start:]!r}"
            self.conn.settimeout(left)
            try:
                chunk = self.conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                self.ended = True
                return False
            self.received += chunk
        return True

    def closed_within(self, within: float) -> bool:
        """Whether the server closes the connection within ``within`` seconds (whatever
        comes before: a keepalive sent as the tenant was being removed)."""
        deadline = time.monotonic() + within
        while not self.ended:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.conn.settimeout(left)
            try:
                chunk = self.conn.recv(65536)
            except TimeoutError:
                continue
            self.ended = not chunk
            self.received += chunk
        return True

    def close(self) -> None:
        self.conn.close()


def _streams_on_every_worker(
    broker: RunningBroker, path: str, token: str, workers: set[int]
) -> dict[int, Stream]:
    """One stream of ``path`` held by each worker (the kernel spreads connections)."""
    held: dict[int, Stream] = {}
    for _ in range(64):
        stream = Stream(broker, path, token)
        pid = stream.worker(workers)
        if pid in held:
            stream.close()
        else:
            held[pid] = stream
        if len(held) == len(workers):
            return held
    raise AssertionError(f"streams reached only workers {sorted(held)} of {sorted(workers)}")


def _answers_of_every_worker(port: int, path: str, token: str, workers: set[int]) -> dict[int, int]:
    """The status each worker answers ``GET path`` with (a new connection each time, until
    each worker has answered one)."""
    answers: dict[int, int] = {}
    for _ in range(64):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            request = f"GET {path} HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {token}\r\n"
            conn.sendall(request.encode() + b"\r\n")
            raw = b""
            while b"\r\n\r\n" not in raw:
                chunk = conn.recv(65536)
                assert chunk, f"the connection closed before an answer: {raw!r}"
                raw += chunk
            # The connection is kept alive after the answer: its worker can be found.
            inodes = tcp_inodes(port, ESTABLISHED, remote_port=conn.getsockname()[1])
            pid = next(p for p in workers if socket_inodes(p) & inodes)
            answers.setdefault(pid, int(raw.split(b" ", 2)[1]))
        if len(answers) == len(workers):
            break
    return answers


def _remove(broker: RunningBroker, name: str) -> None:
    removed = broker.client.delete(f"/v1/admin/tenants/{name}", headers=broker.admin_headers())
    assert removed.status_code == 200, removed.text


def test_every_stream_on_a_removed_tenant_ends_on_every_worker(broker: RunningBroker) -> None:
    port = int(broker.url.rsplit(":", 1)[1])
    workers = wait_workers_listening(broker.proc.pid, port, 2, timeout=30)
    suffix = secrets.token_hex(3)
    gone_name, kept_name = f"gone-{suffix}", f"kept-{suffix}"
    gone, kept = broker.create_tenant(gone_name), broker.create_tenant(kept_name)
    gone_token = gone.app_token(gone.create_app(SCOPE))
    kept_token = kept.app_token(kept.create_app(SCOPE))
    default_token = broker.app_token(broker.create_app(SCOPE))
    feed = "/v1/revocations/stream"
    doomed = _streams_on_every_worker(broker, f"/t/{gone_name}{feed}", gone_token, workers)
    others = {
        "kept": _streams_on_every_worker(broker, f"/t/{kept_name}{feed}", kept_token, workers),
        "default": _streams_on_every_worker(broker, feed, default_token, workers),
    }
    try:
        _remove(broker, gone_name)
        # Each worker's stream ends (one worker removed the tenant, the other learns it
        # from the registry): the response is finished and the connection closed.
        for pid, stream in doomed.items():
            assert stream.closed_within(ENDS_WITHIN), (
                f"worker {pid}: the removed tenant's stream goes on: {stream.received[-200:]!r}"
            )
            # Finished as a response (its last chunk), not cut off.
            assert stream.received.endswith(b"0\r\n\r\n"), stream.received[-200:]
        # Reconnecting, its reader is told there is no such tenant, by either worker.
        answers = _answers_of_every_worker(port, f"/t/{gone_name}{feed}", gone_token, workers)
        assert answers == dict.fromkeys(workers, 404), answers
        # The other tenant's streams and the default tenant's go on beating.
        for kind, streams in others.items():
            for pid, stream in streams.items():
                assert stream.read_until(b": keepalive", within=BEATS_WITHIN), (
                    f"worker {pid}: the {kind} tenant's stream ended"
                )
    finally:
        for stream in [*doomed.values(), *(s for group in others.values() for s in group.values())]:
            stream.close()


def test_a_verifier_following_a_removed_tenant_fails_closed(broker: RunningBroker) -> None:
    """Its feed goes quiet, so past ``max_feed_staleness`` the tenant's tokens are refused
    (a stream that beat on would keep the verifier accepting them for as long as its app
    token lived: 30 minutes by default)."""
    name = f"gone-{secrets.token_hex(3)}"
    view = broker.create_tenant(name)
    app = view.create_app(SCOPE)
    agent = view.register(SCOPE)
    _, claims = jwt_parts(agent.access_token)
    audience = claims["aud"] if isinstance(claims["aud"], str) else claims["aud"][0]
    # Past the broker's 2 s keepalive period: a feed still beating never goes stale.
    staleness = 4.0
    verifier = Verifier(
        view.url,
        issuer=claims["iss"],
        audience=audience,
        credentials=AppCredentials(app["client_id"], app["client_secret"]),
        max_feed_staleness=staleness,
    )
    verifier.start()
    try:
        assert verifier.verify(agent.access_token).sub == agent.agent_id
        _remove(broker, name)
        deadline = time.monotonic() + ENDS_WITHIN + staleness
        while True:
            try:
                verifier.verify(agent.access_token)
            except RevocationStateStale:
                break
            assert time.monotonic() < deadline, (
                f"still accepted {ENDS_WITHIN + staleness:g} s after the removal"
            )
            time.sleep(0.1)
        # And it stays refused: the feed does not come back (its reconnection is a 404).
        time.sleep(1.0)
        with pytest.raises(RevocationStateStale):
            verifier.verify(agent.access_token)
    finally:
        verifier.close()


def test_a_process_that_did_not_remove_the_tenant_stops_serving_it_unasked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In process, two tenancies over one store stand for two workers: the one that did
    not remove the tenant stops serving it at its next registry read (``recheck``, which
    the server runs every RECHECK seconds), with no request for the tenant; the tenant
    still served and the default tenant are left alone."""
    secret = "removed tenant feed admin secret " + "x" * 16
    store = MemoryStore()
    now = [0.0]

    def worker() -> Tenancy:
        default = Broker(
            Config(admin_secret_hash=hash_secret(secret)),
            store,
            KeyRing.generate(),
            nonce_secret=b"n" * 32,
        )
        return Tenancy(default, monotonic=lambda: now[0])

    here, there = worker(), worker()
    ctx = RequestContext(request_id="req-removed-feed", remote="127.0.0.1")
    admin = here.default.admin_auth(secret, ctx).claims
    for name in ("gone", "kept"):
        here.create(admin, name=name, trust_domain=None, ctx=ctx)
    gone, kept = there.broker("gone"), there.broker("kept")
    assert gone is not None and kept is not None
    try:
        here.remove(admin, "gone", ctx)
        assert there.recheck() == []  # its rows were read less than RECHECK ago
        assert gone.serving
        now[0] += RECHECK
        assert there.recheck() == ["gone"]
        assert not gone.serving
        assert kept.serving and there.broker("kept") is kept
        assert there.default.serving and here.default.serving
        assert there.broker("gone") is None
        # The registry unreadable: "kept" goes on being served, and the failure is logged
        # once, not at every round, until a read succeeds again.
        with caplog.at_level(logging.WARNING, logger="tasklease"):
            with patch.object(there, "broker", side_effect=OSError("database away")):
                for _ in range(3):
                    now[0] += RECHECK
                    assert there.recheck() == []
            now[0] += RECHECK
            assert there.recheck() == []
            with patch.object(there, "broker", side_effect=OSError("database away")):
                assert there.recheck() == []
        failures = [r for r in caplog.records if "registry row failed" in r.getMessage()]
        assert len(failures) == 2 and "database away" not in caplog.text
        assert kept.serving
    finally:
        for tenancy in (here, there):
            tenancy.close()
            tenancy.default.audit.close()
