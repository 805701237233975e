# Would fail if: a process began answering with the revocation index it loaded when its
# broker was built, missing what other processes revoked between that load and the moment
# it starts serving (a worker respawned under `serve --workers`, a replica restarting).
"""A broker starts serving with every revocation committed before it does.

Its index is loaded when the broker is built; building the application, freezing the
heap and starting the server come after, and another process sharing the store may
revoke meanwhile. No wake-up of this process existed yet to hear it (SQLite's datagram
socket, PostgreSQL's LISTEN), and the poll's first read waits an interval
(``revocation_poll_interval``, up to an hour): the start reads the store once more before
the first request is answered. In process: two brokers over one store, the poll set to
an hour so that only that read can carry the revocation."""

from __future__ import annotations

from security_support import CTX, START, admin, register
from starlette.testclient import TestClient

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore


def _broker(store: MemoryStore, ring: KeyRing) -> Broker:
    return Broker(
        Config(revocation_poll_interval=3600),
        store,
        ring,
        clock=ManualClock(START),
        nonce_secret=b"n" * 32,
    )


def test_a_revocation_made_while_a_process_starts_is_enforced_from_its_first_request() -> None:
    store, ring = MemoryStore(), KeyRing.generate()
    other = _broker(store, ring)
    agent = register(other)
    starting = _broker(store, ring)  # its index is loaded now: the agent is not revoked
    other.revoke(admin(other).claims, level="agent", target=agent.claims.sub, ctx=CTX)
    with TestClient(create_app(starting)) as client:
        answer = client.post("/v1/token/validate", json={"token": agent.token})
        assert answer.status_code == 200
        assert answer.json()["valid"] is False, answer.json()
