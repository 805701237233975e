"""Revocation streams are capped by reader and by process (docs/decisions.md 140).

Any credential allowed to read the feed could open thousands of ``GET
/v1/revocations/stream`` at once and hold a worker's memory, descriptors and fan-out. A
reader (the principal its token names) now holds at most ``feed_streams_per_reader``
streams in a process and the process at most ``feed_streams_per_process``; one more is
answered 429 with ``Retry-After`` and a ``denial_id`` naming one audit event, and a stream
gives its place back however it ends. Real brokers over loopback HTTP: ``tasklease
serve`` processes, and one served in this process by uvicorn where the test must see
inside it (a shutdown, a failure).
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from e2e_support import (
    SHARED_ENV,
    RunningBroker,
    assert_problem,
    jwt_parts,
    metrics_url,
)

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.storage import open_store

pytestmark = pytest.mark.slow

STREAM = "/v1/revocations/stream"


def _caps(per_reader: int, per_process: int) -> dict[str, str]:
    return {
        **SHARED_ENV,
        "TASKLEASE_FEED_STREAMS_PER_READER": str(per_reader),
        "TASKLEASE_FEED_STREAMS_PER_PROCESS": str(per_process),
    }


class Stream:
    """One revocation stream over its own connection: open (past its backlog, at its
    ``sync`` event) until :meth:`close`, or the refusal the broker answered instead."""

    def __init__(self, url: str, token: str) -> None:
        self._client = httpx.Client(base_url=url, timeout=10)
        headers = {"Authorization": f"Bearer {token}"}
        self._opened = self._client.stream("GET", STREAM, headers=headers)
        self.response = self._opened.__enter__()
        if self.response.status_code == 200:
            # Kept: a line iterator dropped half-way is closed, and closes the connection.
            self._lines = self.response.iter_lines()
            for line in self._lines:
                if line.startswith("event: sync"):
                    break
        else:
            self.response.read()
            self.close()

    @property
    def open(self) -> bool:
        return self.response.status_code == 200

    def close(self) -> None:
        self._opened.__exit__(None, None, None)
        self._client.close()


@pytest.fixture
def streams() -> Iterator[Callable[[str, str], Stream]]:
    """Open streams, every one closed at the test's end."""
    opened: list[Stream] = []

    def open_stream(url: str, token: str) -> Stream:
        stream = Stream(url, token)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def _gauge(broker: RunningBroker) -> float:
    text = httpx.get(metrics_url(broker), timeout=10).text
    match = re.search(r"^tasklease_feed_streams (\S+)$", text, re.M)
    assert match, "no tasklease_feed_streams gauge"
    return float(match[1])


def _until_streams(broker: RunningBroker, count: int) -> None:
    """Wait until the broker counts ``count`` open streams (it notices a hang-up soon)."""
    deadline = time.monotonic() + 10
    while _gauge(broker) != count:
        assert time.monotonic() < deadline, f"{_gauge(broker)} streams held, not {count}"
        time.sleep(0.05)


def _events_naming(broker: RunningBroker, denial_id: str) -> int:
    db = broker.data_dir / "tasklease.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (count,) = con.execute(
            "SELECT count(*) FROM audit_events WHERE detail LIKE ?", (f"%denial={denial_id}%",)
        ).fetchone()
    finally:
        con.close()
    return int(count)


def _refused(stream: Stream) -> dict[str, Any]:
    assert not stream.open, "the stream was served, not refused"
    body = assert_problem(stream.response, 429, "rate_limited")
    assert stream.response.headers["Retry-After"] == "5"
    assert body["denial_id"].startswith("den_")
    return body


def _app_token(broker: RunningBroker) -> str:
    return broker.app_token(broker.create_app(["read:data:*"]))


# --- the caps ---------------------------------------------------------------------------


def test_a_reader_past_its_cap_is_refused_with_one_audit_event_and_others_are_not(
    start_broker: Callable[..., RunningBroker], streams: Callable[[str, str], Stream]
) -> None:
    broker = start_broker(env=_caps(2, 10))
    app = broker.create_app(["read:data:*"])
    token = broker.app_token(app)
    first, second = streams(broker.url, token), streams(broker.url, token)
    assert first.open and second.open
    _until_streams(broker, 2)

    refused = _refused(streams(broker.url, token))
    assert refused["detail"] == "too many revocation streams open for this reader"
    # The reader is the app, not its token: signing in again gives it no more streams.
    again = _refused(streams(broker.url, broker.app_token(app)))
    assert again["denial_id"] != refused["denial_id"]
    for denial_id in (refused["denial_id"], again["denial_id"]):
        assert _events_naming(broker, denial_id) == 1
    events = broker.get(
        "/v1/audit/events",
        params={"event_type": "feed_stream_denied"},
        headers=broker.admin_headers(),
    ).json()["events"]
    assert [e["detail"].rpartition("denial=")[2] for e in events] == [
        refused["denial_id"],
        again["denial_id"],
    ]
    for event in events:
        assert event["outcome"] == "denied"
        assert event["agent_id"] == f"app:{app['app_id']}"
        assert "feed_streams_per_reader is 2" in event["detail"]

    # Another reader (another app, an operator) is not held back by this one.
    assert streams(broker.url, _app_token(broker)).open
    assert streams(broker.url, broker.admin_token()).open
    _until_streams(broker, 4)

    # A stream its reader closes gives its place back.
    first.close()
    _until_streams(broker, 3)
    assert streams(broker.url, token).open
    _refused(streams(broker.url, token))


def test_the_process_cap_refuses_every_reader_of_every_tenant_once_reached(
    start_broker: Callable[..., RunningBroker], streams: Callable[[str, str], Stream]
) -> None:
    broker = start_broker(env=_caps(2, 3))
    tenant = broker.create_tenant("acme")
    a, b = _app_token(broker), _app_token(broker)
    held = [streams(broker.url, a), streams(broker.url, a), streams(broker.url, b)]
    assert all(s.open for s in held)
    _until_streams(broker, 3)

    # b holds one of its two, but the process holds its three.
    refused = _refused(streams(broker.url, b))
    assert refused["detail"] == "this broker serves as many revocation streams as it may"
    assert _events_naming(broker, refused["denial_id"]) == 1
    _refused(streams(broker.url, broker.admin_token()))
    # Another tenant's reader counts against the same process, and its refusal is
    # audited in its own tenant's log.
    theirs = _refused(streams(tenant.url, tenant.admin_token()))
    events = tenant.get(
        "/v1/audit/events",
        params={"event_type": "feed_stream_denied"},
        headers=tenant.admin_headers(),
    ).json()["events"]
    [event] = events
    assert event["detail"].endswith(f"denial={theirs['denial_id']}")
    assert "feed_streams_per_process is 3" in event["detail"]
    assert _events_naming(broker, theirs["denial_id"]) == 1

    held[2].close()
    _until_streams(broker, 2)
    assert streams(tenant.url, tenant.admin_token()).open
    _until_streams(broker, 3)
    _refused(streams(broker.url, b))


# --- a stream the broker ends gives its place back ------------------------------------


def test_streams_ended_by_their_readers_revocation_give_their_places_back(
    start_broker: Callable[..., RunningBroker], streams: Callable[[str, str], Stream]
) -> None:
    broker = start_broker(env=_caps(2, 10))
    app = broker.create_app(["read:data:*"])
    token = broker.app_token(app)
    assert streams(broker.url, token).open and streams(broker.url, token).open
    _until_streams(broker, 2)
    _refused(streams(broker.url, token))

    jti = jwt_parts(token)[1]["jti"]
    assert broker.revoke("token", jti).status_code == 200
    _until_streams(broker, 0)
    fresh = broker.app_token(app)
    assert streams(broker.url, fresh).open and streams(broker.url, fresh).open


def test_streams_the_hub_ends_give_their_places_back(
    start_broker: Callable[..., RunningBroker], streams: Callable[[str, str], Stream]
) -> None:
    """The database went back in time (decision 139): the hub ends every stream, and
    every one of them frees its place."""
    broker = start_broker(env=_caps(2, 10))
    for n in range(3):
        assert broker.revoke("task", f"before-{n}").status_code == 200
    token = _app_token(broker)
    assert streams(broker.url, token).open and streams(broker.url, token).open
    _until_streams(broker, 2)

    with sqlite3.connect(broker.data_dir / "tasklease.db") as db:
        first = db.execute("SELECT MIN(seq) FROM revocations").fetchone()[0]
        db.execute("DELETE FROM revocations WHERE seq > ?", (first,))
        db.execute("UPDATE revocation_seqs SET seq = ?", (first,))
    assert broker.revoke("task", "after-the-failover").status_code == 200
    _until_streams(broker, 0)
    assert streams(broker.url, token).open and streams(broker.url, token).open


# --- inside one process: a shutdown, a failure -------------------------------------------

ADMIN_SECRET = "s" * 40


class Served:
    """A broker served by uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(broker, background=False),
            log_level="critical",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.01)

    def admin_token(self) -> str:
        answer = httpx.post(f"{self.url}/v1/admin/auth", json={"secret": ADMIN_SECRET})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the server did not stop"
        self.sock.close()


@pytest.fixture
def served() -> Iterator[Served]:
    config = Config(
        admin_secret_hash=hash_secret(ADMIN_SECRET),
        feed_streams_per_reader=3,
        feed_streams_per_process=3,
    )
    broker = Broker(config, open_store("memory://"), KeyRing.generate(), nonce_secret=b"n" * 32)
    running = Served(broker)
    yield running
    if running.thread.is_alive():
        running.stop()
    broker.audit.close()


def _until_held(broker: Broker, count: int) -> None:
    deadline = time.monotonic() + 10
    while broker.stream_slots.total != count:
        assert time.monotonic() < deadline, f"{broker.stream_slots.total} held, not {count}"
        time.sleep(0.02)


def test_a_server_shutting_down_gives_back_every_place(
    served: Served, streams: Callable[[str, str], Stream]
) -> None:
    token = served.admin_token()
    assert all(streams(served.url, token).open for _ in range(3))
    assert served.broker.stream_slots.total == 3
    # The streams never end by themselves: cut when the graceful shutdown times out.
    served.stop()
    assert served.broker.stream_slots.total == 0
    assert served.broker.stream_slots.held((served.broker.config.issuer, "admin")) == 0


def test_a_stream_that_fails_gives_its_place_back(
    served: Served, streams: Callable[[str, str], Stream], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = served.broker
    token = served.admin_token()
    assert streams(served.url, token).open  # the hub is started: only streams read now

    def fail(*_args: object) -> object:
        raise RuntimeError("the store failed")

    monkeypatch.setattr(broker, "revocation_feed", fail)
    with (
        httpx.Client(base_url=served.url, timeout=10) as client,
        client.stream("GET", STREAM, headers={"Authorization": f"Bearer {token}"}) as response,
        pytest.raises(httpx.HTTPError),
    ):
        response.read()  # the answer breaks off where the stream failed
    _until_held(broker, 1)
    monkeypatch.undo()
    assert all(streams(served.url, token).open for _ in range(2))
    assert broker.stream_slots.total == 3
    assert not streams(served.url, token).open


# --- the settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FEED_STREAMS_PER_READER", "0", "feed_streams_per_reader must be between 1 and 100000"),
        ("FEED_STREAMS_PER_PROCESS", "-5", "feed_streams_per_process must be between 1 and"),
        ("FEED_STREAMS_PER_PROCESS", "many", "feed_streams_per_process must be an integer"),
    ],
)
def test_a_broker_with_a_bad_stream_cap_does_not_start(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env |= {"TASKLEASE_DATA_DIR": str(tmp_path), f"TASKLEASE_{name}": value}
    # An address no interface has: were the setting not refused, serve would stop there.
    where = ["--host", "192.0.2.1", "--port", "8080"]
    done = subprocess.run(  # noqa: S603 - our own CLI, arguments fixed
        [sys.executable, "-m", "tasklease.cli.main", "serve", *where],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert message in done.stdout + done.stderr
