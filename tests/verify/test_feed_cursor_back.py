"""A verifier takes the broker's cursor even when it is smaller than its own: after the
broker's database went back in time, the broker answers a snapshot and the store's last
number, and numbers above it are handed out again (decision 133). Kept at its own larger
cursor, the verifier would skip them on its next reconnection."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import httpx
import pytest
from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker
from verify_support import app_credentials, poll

from tasklease.core.revocation import RevocationIndex
from tasklease.verify import InvalidToken, Verifier, VerifierUnavailable
from tasklease.verify._feed import FeedFollower


def _revocation(seq: int, target: str) -> str:
    entry = {"seq": seq, "level": "token", "target": target, "revoked_at": 1, "expires_at": 9e9}
    return f"id: {seq}\nevent: revocation\ndata: {json.dumps(entry)}\n\n"


def _sync(cursor: int) -> str:
    return (
        f"id: {cursor}\nevent: sync\ndata: {json.dumps({'cursor': cursor, 'server_time': 1})}\n\n"
    )


def test_the_verifier_steps_back_to_the_cursor_the_broker_gives() -> None:
    asked: list[str | None] = []
    answers = [
        _revocation(5, "jti-5") + _sync(5),  # the last stream before the failover
        _revocation(2, "jti-2-again") + _sync(2),  # a snapshot: the store's last is 2
        _sync(2),
    ]
    done = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params.get("cursor"))
        if len(asked) >= len(answers):
            done.set()
        body = answers[min(len(asked), len(answers)) - 1]
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    index = RevocationIndex()
    follower = FeedFollower(
        httpx.Client(transport=httpx.MockTransport(handler), base_url="http://broker"),
        index,
        token_source=lambda: "t",
        forget_token=lambda: None,
        read_timeout=5,
        on_revocation=lambda: None,
        housekeeping=lambda: None,
        max_backoff=0.05,
    )
    follower.start()
    try:
        assert done.wait(10)
    finally:
        follower.stop()
    assert asked[:3] == [None, "5", "2"]
    assert len(index) == 2  # what it held stays: jti-5 and jti-2-again


def test_the_verifier_sends_back_the_id_of_the_last_event() -> None:
    """The broker's event ids are anchored cursors (a seq and the fingerprint of the entry
    at it): the verifier sends the last one back as it is, so that a broker whose database
    went back in time can tell that the entry is no longer the one it read."""
    anchored = "5.0123456789abcdef"
    asked: list[str | None] = []
    answers = [
        _revocation(5, "jti-5").replace("id: 5\n", f"id: {anchored}\n")
        + _sync(5).replace("id: 5\n", f"id: {anchored}\n"),
        _sync(5),
    ]
    done = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params.get("cursor"))
        if len(asked) >= len(answers):
            done.set()
        body = answers[min(len(asked), len(answers)) - 1]
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    follower = FeedFollower(
        httpx.Client(transport=httpx.MockTransport(handler), base_url="http://broker"),
        RevocationIndex(),
        token_source=lambda: "t",
        forget_token=lambda: None,
        read_timeout=5,
        on_revocation=lambda: None,
        housekeeping=lambda: None,
        max_backoff=0.05,
    )
    follower.start()
    try:
        assert done.wait(10)
    finally:
        follower.stop()
    assert asked[:2] == [None, anchored]
    assert follower.cursor == 5


@pytest.mark.slow
def test_a_verifier_gets_what_was_numbered_again_below_its_cursor(
    own_broker: RunningBroker,
) -> None:
    """End to end: a verifier has read to seq N; the broker's database is restored to an
    earlier state and numbers past N again (a task revocation among the numbers handed out
    again) while the verifier cannot reach it. Reconnecting with its cursor, the verifier
    gets a snapshot and refuses the task's token."""
    running = own_broker
    agent = running.register(["read:data:1"])
    for n in range(6):
        assert running.revoke("task", f"before-{n}").status_code == 200
    head = running.get("/v1/revocations", headers=running.admin_headers()).json()["cursor"]
    verifier = Verifier(running.url, audience="svc-a", credentials=app_credentials(running))
    try:
        assert verifier.start()
        poll(lambda: verifier.stats()["feed_cursor"] == head, timeout=10)
        verifier.verify(agent.access_token)
        port = int(running.url.rsplit(":", 1)[1])
        stop_broker(running)
        # Restored to three entries before the verifier's cursor, then numbered past it.
        keep = head - 3
        now = time.time()
        with sqlite3.connect(running.data_dir / "tasklease.db") as db:
            (tenant,) = db.execute("SELECT tenant_id FROM revocations LIMIT 1").fetchone()
            db.execute("DELETE FROM revocations WHERE seq > ?", (keep,))
            db.execute("UPDATE revocation_seqs SET seq = ?", (keep,))
            rows = [("task", agent.task_id)] + [("token", f"renewed-{n}") for n in range(3)]
            for seq, (level, target) in enumerate(rows, start=keep + 1):
                db.execute(
                    "INSERT INTO revocations (tenant_id, seq, level, target, revoked_at,"
                    " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (tenant, seq, level, target, int(now), now + 3600),
                )
        connections = verifier.stats()["feed_connections"]
        restarted = launch_broker(
            running.data_dir, {**SHARED_ENV, "TASKLEASE_AUDIENCE": "svc-a"}, port=port
        )
        try:
            poll(lambda: verifier.stats()["feed_connections"] > connections, timeout=10)
            poll(lambda: _revoked(verifier, agent.access_token), timeout=10)
            assert verifier.stats()["feed_cursor"] == head + 1
        finally:
            stop_broker(restarted)
    finally:
        verifier.close()


def _revoked(verifier: Verifier, token: str) -> bool:
    try:
        verifier.verify(token)
    except InvalidToken as exc:
        return "revoked" in exc.reason
    except VerifierUnavailable:
        return False
    return False
