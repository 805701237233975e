# Would fail if: the password of an audit witness's URL (user:password@host, sent to the
# witness as HTTP Basic) reached the service log: the HTTP client's own line for each
# request, or the broker's lines about a witness that refused or could not be reached.
"""The service log of a real ``tasklease serve`` holds no credential of the configuration:
a witness URL's password is sent to the witness, and shown nowhere else."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from e2e_support import launch_broker, run_cli, stop_broker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PASSWORD = "witness-Pa55word-not-for-logs"  # noqa: S105 - the secret that must not leak


class _Refusing(BaseHTTPRequestHandler):
    """A witness that refuses every checkpoint (as one that does not know the log)."""

    seen: list[str | None] = []

    def do_POST(self) -> None:
        _Refusing.seen.append(self.headers.get("authorization"))
        self.rfile.read(int(self.headers.get("content-length", "0")))
        body = b"unknown log\n"
        self.send_response(404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def witness() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _witness_vkey(directory: Path) -> str:
    # In this process: the witness's key is this test's setup, not what it checks.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    made = run_cli(["audit", "witness", "init", str(directory), "--name", "witness.example"], env)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.mark.parametrize("level", ["info", "debug"])
def test_a_witness_urls_password_never_reaches_the_log(
    tmp_path: Path, witness: HTTPServer, level: str
) -> None:
    vkey = _witness_vkey(tmp_path / "witness")
    port = witness.server_address[1]
    env = {
        "TASKLEASE_LOG_LEVEL": level,
        "TASKLEASE_AUDIT_WITNESSES": f"http://auditor:{PASSWORD}@127.0.0.1:{port} {vkey}",
        "TASKLEASE_AUDIT_CHECKPOINT_INTERVAL": "0.2",
    }
    _Refusing.seen.clear()
    broker = launch_broker(tmp_path / "broker", env)
    try:
        broker.admin_token()
        deadline = time.monotonic() + 30
        while not _Refusing.seen and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _Refusing.seen, "the broker never took a checkpoint to its witness"
        told = ("refused the audit checkpoint", f"http://***@127.0.0.1:{port}")
        deadline = time.monotonic() + 10
        while not all(line in broker.log() for line in told) and time.monotonic() < deadline:
            time.sleep(0.05)  # the refusal's log lines
    finally:
        stop_broker(broker)
    # The credential went where it belongs: to the witness, as HTTP Basic.
    assert all(seen and seen.startswith("Basic ") for seen in _Refusing.seen)
    text = broker.log()
    assert "refused the audit checkpoint" in text, text  # the refusal is told...
    assert f"http://***@127.0.0.1:{port}" in text, text  # ...naming the witness
    assert PASSWORD not in text, text
