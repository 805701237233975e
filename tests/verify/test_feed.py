"""The broker's revocation feed: snapshot, cursor, server-sent events, authentication."""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from typing import Any

import httpx
import pytest
from e2e_support import RunningBroker, assert_problem

pytestmark = pytest.mark.slow


def _entries(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["level"], e["target"]) for e in body["revocations"]]


def test_snapshot_then_cursor(broker: RunningBroker) -> None:
    agent = broker.register(["read:data:1"])
    assert broker.revoke("task", agent.task_id).status_code == 200
    snapshot = broker.get("/v1/revocations", headers=broker.admin_headers())
    assert snapshot.status_code == 200, snapshot.text
    body = snapshot.json()
    assert set(body) == {"revocations", "cursor", "next_cursor", "server_time"}
    assert ("task", agent.task_id) in _entries(body)
    entry = body["revocations"][-1]
    assert set(entry) == {"level", "target", "revoked_at", "expires_at", "seq"}
    assert body["cursor"] == max(e["seq"] for e in body["revocations"])

    again = broker.get(f"/v1/revocations?cursor={body['cursor']}", headers=broker.admin_headers())
    assert again.json()["revocations"] == []
    assert again.json()["cursor"] == body["cursor"]

    assert broker.revoke("agent", agent.agent_id).status_code == 200
    app_token = broker.app_token(broker.create_app(["read:data:*"]))
    after = broker.get(
        f"/v1/revocations?cursor={body['cursor']}",
        headers={"Authorization": f"Bearer {app_token}"},
    ).json()
    assert _entries(after) == [("agent", agent.agent_id)]
    assert after["cursor"] > body["cursor"]


def test_feed_needs_an_admin_or_app_token(broker: RunningBroker) -> None:
    for path in ("/v1/revocations", "/v1/revocations/stream"):
        assert_problem(broker.get(path), 401, "unauthorized")
        garbage = broker.get(path, headers={"Authorization": "Bearer x.y.z"})
        assert_problem(garbage, 401, "unauthorized")
        agent = broker.register(["read:data:1"])
        assert_problem(broker.get(path, headers=agent.bearer), 403, "insufficient_scope")
    bad = broker.get("/v1/revocations?cursor=-1", headers=broker.admin_headers())
    assert_problem(bad, 400, "invalid_request")


def test_stream_delivers_backlog_sync_and_new_revocations(broker: RunningBroker) -> None:
    head = broker.get("/v1/revocations", headers=broker.admin_headers()).json()["cursor"]
    agent = broker.register(["read:data:1"])
    events: list[tuple[str, str, str]] = []
    synced = threading.Event()
    delivered = threading.Event()
    keepalive = threading.Event()

    def read() -> None:
        with (
            httpx.Client(base_url=broker.url, timeout=10) as client,
            client.stream(
                "GET", f"/v1/revocations/stream?cursor={head}", headers=broker.admin_headers()
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = data = ident = ""
            for line in response.iter_lines():
                if line.startswith(": keepalive"):
                    keepalive.set()
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line.startswith("id: "):
                    ident = line[4:]
                elif line == "" and kind:
                    events.append((kind, ident, data))
                    if kind == "sync":
                        synced.set()
                    if kind == "revocation" and json.loads(data)["target"] == agent.agent_id:
                        delivered.set()
                    kind = data = ident = ""
                if delivered.is_set() and keepalive.is_set():
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert synced.wait(10)
    assert broker.revoke("agent", agent.agent_id).status_code == 200
    assert delivered.wait(5)
    assert keepalive.wait(5)
    reader.join(5)
    sync = next(e for e in events if e[0] == "sync")
    data = json.loads(sync[2])
    # The id is the anchored cursor: the seq and the fingerprint of the entry at it.
    assert data["next_cursor"] == sync[1] and data["cursor"] >= head
    assert sync[1].partition(".")[0] == str(data["cursor"])
    revocation = next(e for e in events if e[0] == "revocation")
    entry = json.loads(revocation[2])
    seq, _, fingerprint = revocation[1].partition(".")
    assert entry["level"] == "agent" and int(seq) == entry["seq"] > head
    assert len(fingerprint) == 16
    # Sent back, it reads on from there.
    after = broker.get(
        "/v1/revocations", params={"cursor": revocation[1]}, headers=broker.admin_headers()
    ).json()
    assert after["revocations"] == [] and after["next_cursor"] == revocation[1]


def test_a_stream_ends_when_its_readers_token_is_revoked(broker: RunningBroker) -> None:
    """An operator reading the stream is removed: its token is revoked, and the stream
    ends there. It never hears the revocations made after, as its next request would be
    refused."""
    name = f"feed-{secrets.token_hex(3)}"
    made = broker.post(
        "/v1/admin/operators",
        json={"name": name, "role": "operator"},
        headers=broker.admin_headers(),
    )
    assert made.status_code == 201, made.text
    signed = broker.post("/v1/operator/auth", json={"name": name, "secret": made.json()["secret"]})
    headers = {"Authorization": f"Bearer {signed.json()['access_token']}"}
    synced, ended = threading.Event(), threading.Event()
    heard: list[str] = []

    def read() -> None:
        with (
            httpx.Client(base_url=broker.url, timeout=15) as client,
            client.stream("GET", "/v1/revocations/stream", headers=headers) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("event: sync"):
                    synced.set()
                elif line.startswith("data: ") and synced.is_set():
                    heard.append(json.loads(line[6:]).get("target", ""))
        ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert synced.wait(10)
    removed = broker.client.delete(f"/v1/admin/operators/{name}", headers=broker.admin_headers())
    assert removed.status_code == 200, removed.text
    later = f"task-after-{secrets.token_hex(3)}"
    assert broker.revoke("task", later).status_code == 200
    assert ended.wait(10), "the stream went on after its reader's token was revoked"
    reader.join(5)
    assert later not in heard
    assert broker.get("/v1/revocations", headers=headers).status_code == 401


def test_streams_end_when_the_database_went_back(own_broker: RunningBroker) -> None:
    """The store loses its last revocations (a failover to a standby behind, a restore)
    and hands their numbers out again: every stream past them is ended, so that its
    reader reconnects with its cursor and gets a snapshot (decision 133)."""
    running = own_broker
    for n in range(3):
        assert running.revoke("task", f"before-{n}").status_code == 200
    headers = running.admin_headers()
    synced, ended = threading.Event(), threading.Event()

    def read() -> None:
        with (
            httpx.Client(base_url=running.url, timeout=15) as client,
            client.stream("GET", "/v1/revocations/stream", headers=headers) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("event: sync"):
                    synced.set()
        ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert synced.wait(10)
    with sqlite3.connect(running.data_dir / "tasklease.db") as db:
        first = db.execute("SELECT MIN(seq) FROM revocations").fetchone()[0]
        db.execute("DELETE FROM revocations WHERE seq > ?", (first,))
        db.execute("UPDATE revocation_seqs SET seq = ?", (first,))
    assert running.revoke("task", "after-the-failover").status_code == 200
    assert ended.wait(10), "the stream went on past numbers handed out again"
    reader.join(5)
    snapshot = running.get("/v1/revocations", params={"cursor": "999"}, headers=headers).json()
    assert "after-the-failover" in [e["target"] for e in snapshot["revocations"]]
    assert snapshot["cursor"] < 999
