# Would fail if: a revocation committed through one worker were not enforced by the other
# without its poll (the wake-up datagram), or an unusable wake-up directory stopped the
# poll from carrying revocations, or were complained about on every commit.
"""``tasklease serve --workers 2`` on one SQLite file: a revocation made through one worker
is enforced by the other because the committing worker wakes it (the poll set to an hour
here), and by the poll alone when the wake-up directory cannot be used."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker
from worker_procs import ESTABLISHED, socket_inodes, tcp_inodes, wait_workers_listening

pytestmark = pytest.mark.slow

ENOUGH = 5.0  # seconds; propagation takes milliseconds, the bound only ends a failure


def _worker_of(conn: socket.socket, server_port: int, workers: set[int]) -> int:
    """The worker process holding the server side of ``conn``."""
    inodes = tcp_inodes(server_port, ESTABLISHED, remote_port=conn.getsockname()[1])
    for pid in workers:
        if socket_inodes(pid) & inodes:
            return pid
    raise AssertionError(f"no worker holds connection {conn.getsockname()[1]}")


def _workers(broker: RunningBroker) -> set[int]:
    """The two worker processes, once both listen."""
    port = int(broker.url.rsplit(":", 1)[1])
    return wait_workers_listening(broker.proc.pid, port, 2, timeout=30)


def _request(conn: socket.socket, path: str, body: dict[str, str], token: str = "") -> dict:
    data = json.dumps(body).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    conn.sendall(
        f"POST {path} HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += conn.recv(65536)
    head, rest = raw.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += conn.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    answer: dict = json.loads(rest)
    return answer


def _connections_to_both(broker: RunningBroker, workers: set[int]) -> dict[int, socket.socket]:
    """One kept-alive connection to each worker (the kernel spreads them by hash)."""
    port = int(broker.url.rsplit(":", 1)[1])
    chosen: dict[int, socket.socket] = {}
    spare: list[socket.socket] = []
    for _ in range(64):
        conn = socket.create_connection(("127.0.0.1", port))
        _request(conn, "/v1/token/validate", {"token": "x"})  # accepted and served
        pid = _worker_of(conn, port, workers)
        if pid in chosen:
            spare.append(conn)
        else:
            chosen[pid] = conn
        if len(chosen) == 2:
            break
    for conn in spare:
        conn.close()
    assert len(chosen) == 2, "64 connections all went to one worker"
    return chosen


def _revoked_through_one_refused_by_the_other(broker: RunningBroker) -> None:
    workers = _workers(broker)
    conns = _connections_to_both(broker, workers)
    revoker_pid, other_pid = sorted(conns)
    revoker, other = conns[revoker_pid], conns[other_pid]
    admin = broker.admin_token()
    for _ in range(3):
        agent = broker.register(["read:data:*"])
        for conn in (revoker, other):
            assert _request(conn, "/v1/token/validate", {"token": agent.access_token})["valid"]
        _request(revoker, "/v1/revoke", {"level": "agent", "target": agent.agent_id}, admin)
        # The worker that committed enforces it before it answers.
        assert not _request(revoker, "/v1/token/validate", {"token": agent.access_token})["valid"]
        deadline = time.monotonic() + ENOUGH
        while _request(other, "/v1/token/validate", {"token": agent.access_token})["valid"]:
            assert time.monotonic() < deadline, "the other worker never enforced the revocation"
            time.sleep(0.001)
    for conn in conns.values():
        conn.close()


def test_a_revocation_through_one_worker_wakes_the_other(tmp_path: Path) -> None:
    # An hour between polls: only the wake-up can carry the revocation in time.
    env = {**SHARED_ENV, "TASKLEASE_REVOCATION_POLL_INTERVAL": "3600"}
    broker = launch_broker(tmp_path / "data", env, args=("--workers", "2"))
    try:
        _revoked_through_one_refused_by_the_other(broker)
        wake_dir = tmp_path / "data" / "tasklease.db.wake"
        assert wake_dir.stat().st_mode & 0o777 == 0o700
        assert len(os.listdir(wake_dir)) == 2  # one socket per worker
        assert "Traceback" not in broker.log()
    finally:
        assert stop_broker(broker) == 0
    assert os.listdir(tmp_path / "data" / "tasklease.db.wake") == []  # removed at exit


def test_an_unusable_wake_directory_leaves_the_poll_and_one_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    wake_dir = data / "tasklease.db.wake"
    wake_dir.mkdir(mode=0o700)
    wake_dir.chmod(0o755)  # others may enter: not used
    env = {**SHARED_ENV, "TASKLEASE_REVOCATION_POLL_INTERVAL": "0.2"}
    broker = launch_broker(data, env, args=("--workers", "2"))
    try:
        _revoked_through_one_refused_by_the_other(broker)
        assert os.listdir(wake_dir) == []
        log = broker.log()
        # Once per worker at start-up, not once per commit.
        assert log.count("wake-ups unavailable") == 2, log[-3000:]
        assert "Traceback" not in log
    finally:
        assert stop_broker(broker) == 0
