"""Slow clients: connections that trickle their request headers a byte at a time, or say
nothing, are closed once ``http_header_timeout`` has passed, and while they trickle every
other client is answered as usual. A body trickled after the headers is cut off at
``http_body_timeout``. A kept-alive connection is closed after ``http_keepalive_timeout``
without a request, and its next request's headers are held to the same deadline as the
first's. Past ``http_max_connections`` a connection is answered 503 as it arrives.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import (
    SHARED_ENV,
    STARTUP_TIMEOUT,
    RunningBroker,
    _clean_env,
    free_port,
    init_data_dir,
    launch_broker,
    stop_broker,
    wait_answering,
)
from worker_procs import wait_workers_listening

from tasklease.http.protocol import MAX_HEADER_BYTES, MAX_PIPELINED

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 1.5
KEEPALIVE_TIMEOUT = 1.0
TRICKLERS = 50
# How long past its deadline a connection may take to be closed, and how long a
# validation may take while the trickle goes on: loose bounds for a loaded CI machine.
GRACE = 3.0
ANSWER_WITHIN = 2.0
ENV = {
    **SHARED_ENV,
    "TASKLEASE_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "TASKLEASE_HTTP_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
    "TASKLEASE_HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT),
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    running = launch_broker(tmp_path_factory.mktemp("slow") / "data", ENV)
    yield running
    stop_broker(running)


def _connect(broker: RunningBroker) -> socket.socket:
    host, port = broker.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setblocking(False)
    return sock


def _closed_by_server(sock: socket.socket, received: bytearray) -> bool:
    """Read what is there; True once the server has closed its side."""
    while True:
        try:
            chunk = sock.recv(4096)
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True
        if not chunk:
            return True
        received += chunk


class Trickle:
    """Connections that send a request line, then one header byte each at a time."""

    def __init__(self, broker: RunningBroker, count: int) -> None:
        self.socks = [_connect(broker) for _ in range(count)]
        self.opened = time.monotonic()
        self.received = {sock: bytearray() for sock in self.socks}
        self.closed_at: dict[socket.socket, float] = {}
        self._stop = threading.Event()
        for sock in self.socks:
            sock.send(b"POST /v1/token/validate HTTP/1.1\r\nHost: broker\r\nX-Slow: ")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for sock in self.socks:
                if sock in self.closed_at:
                    continue
                if _closed_by_server(sock, self.received[sock]):
                    self.closed_at[sock] = time.monotonic()
                    continue
                try:
                    sock.send(b"a")
                except (BrokenPipeError, ConnectionResetError):
                    self.closed_at[sock] = time.monotonic()

    def all_closed(self) -> bool:
        return len(self.closed_at) == len(self.socks)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.socks:
            sock.close()


def _wait_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """What the server sent before closing ``sock``, and when it closed (monotonic)."""
    received = bytearray()
    deadline = time.monotonic() + within
    while not _closed_by_server(sock, received):
        left = deadline - time.monotonic()
        assert left > 0, f"the server kept the connection open; it sent {bytes(received)!r}"
        select.select([sock], [], [], left)
    return bytes(received), time.monotonic()


def test_trickling_headers_and_a_silent_connection_are_cut_off_and_others_are_answered(
    broker: RunningBroker,
) -> None:
    """Connections trickling their headers, and a silent one opened with them, are closed
    408 at the header deadline, while other clients are answered (the silent connection
    waits out the same deadline as the trickle, not two seconds of its own)."""
    agent = broker.register(["read:data:*"])
    silent = _connect(broker)
    silent_opened = time.monotonic()
    silent_end: list[tuple[bytes, float] | BaseException] = []

    def watch_silent() -> None:
        try:
            silent_end.append(_wait_closed(silent, HEADER_TIMEOUT + GRACE))
        except BaseException as exc:  # reported by the test below
            silent_end.append(exc)

    watcher = threading.Thread(target=watch_silent, daemon=True)
    watcher.start()
    trickle = Trickle(broker, TRICKLERS)
    try:
        # While the trickle goes on, other clients are answered promptly.
        answered = 0
        while not trickle.all_closed():
            started = time.monotonic()
            assert broker.is_valid(agent.access_token)
            took = time.monotonic() - started
            assert took < ANSWER_WITHIN, f"a validation took {took:.2f} s during the trickle"
            answered += 1
            assert time.monotonic() - trickle.opened < HEADER_TIMEOUT + GRACE, (
                f"{len(trickle.socks) - len(trickle.closed_at)} trickling connections "
                f"still open {HEADER_TIMEOUT + GRACE:.0f} s after they opened"
            )
            time.sleep(0.05)
        assert answered > 0
        for sock in trickle.socks:
            held = trickle.closed_at[sock] - trickle.opened
            assert held >= HEADER_TIMEOUT - 0.5, f"closed after {held:.2f} s"
            assert trickle.received[sock].startswith(b"HTTP/1.1 408 Request Timeout\r\n")
            assert b"connection: close" in trickle.received[sock].lower()
        # The silent connection.
        watcher.join(HEADER_TIMEOUT + GRACE + 5)
        [end] = silent_end
        if isinstance(end, BaseException):
            raise end
        received, closed = end
        assert closed - silent_opened >= HEADER_TIMEOUT - 0.5
        assert received.startswith(b"HTTP/1.1 408 ")
    finally:
        trickle.close()
        silent.close()
    assert broker.is_valid(agent.access_token)


def test_kept_alive_connections_are_bounded_too(broker: RunningBroker) -> None:
    """Idle after a response: closed after the keep-alive timeout, without a word. A
    second request that trickles: cut off like a first one."""

    def answered_once() -> socket.socket:
        sock = _connect(broker)
        sock.setblocking(True)
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: broker\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.setblocking(False)
        return sock

    slow = answered_once()
    try:
        slow.send(b"GET /v1/health HTTP/1.1\r\nX-Slow: ")
        began = time.monotonic()
        received = bytearray()
        while not _closed_by_server(slow, received):
            assert time.monotonic() - began < HEADER_TIMEOUT + GRACE, "never cut off"
            slow.send(b"a")
            time.sleep(0.2)
        assert time.monotonic() - began >= HEADER_TIMEOUT - 0.5
        assert bytes(received).startswith(b"HTTP/1.1 408 ")
    finally:
        slow.close()

    idle = answered_once()
    try:
        answered = time.monotonic()
        received_idle, closed = _wait_closed(idle, KEEPALIVE_TIMEOUT + GRACE)
        assert received_idle == b""
        assert closed - answered >= KEEPALIVE_TIMEOUT - 0.5
    finally:
        idle.close()


def test_a_trickled_body_is_cut_off(broker: RunningBroker) -> None:
    # Would fail if: the body were bounded in size only, so a client sending a byte of it
    # a second held its connection (and a waiting coroutine) for as long as it liked.
    sock = _connect(broker)
    try:
        sock.send(
            b"POST /v1/token/validate HTTP/1.1\r\nHost: broker\r\n"
            b"content-type: application/json\r\ncontent-length: 4096\r\n\r\n{"
        )
        began = time.monotonic()
        received = bytearray()
        while not _closed_by_server(sock, received):
            assert time.monotonic() - began < BODY_TIMEOUT + GRACE, "never cut off"
            try:
                sock.send(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
        assert time.monotonic() - began >= BODY_TIMEOUT - 0.5
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), bytes(received)
        assert b"connection: close" in head.lower()
        assert b'"error_code":"request_timeout"' in body
    finally:
        sock.close()
    # Logged and counted as what the client got, not as a server error.
    deadline = time.monotonic() + GRACE
    while '"status":408' not in broker.log():
        assert time.monotonic() < deadline, "no access record of the 408"
        time.sleep(0.05)
    assert '"status":500' not in broker.log()
    # A body sent whole is answered as usual.
    agent = broker.register(["read:data:*"])
    assert broker.is_valid(agent.access_token)


def test_a_body_in_pieces_in_time_is_served_and_its_deadline_ends(
    broker: RunningBroker,
) -> None:
    # Would fail if: a body that arrives in several packets within the deadline were cut
    # off, or its deadline outlived it and closed the kept-alive connection later.
    body = b'{"token": "x"}'
    head = (
        b"POST /v1/token/validate HTTP/1.1\r\nHost: broker\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    host, port = broker.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head + body[:5])
        time.sleep(0.3)
        sock.sendall(body[5:])
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        began = time.monotonic()
        while time.monotonic() - began < BODY_TIMEOUT + 1.0:
            time.sleep(0.4)  # under the keep-alive timeout
            sock.sendall(head + body)
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer


def test_a_pipelined_body_waits_its_turn_and_never_breaks_the_response_before_it(
    broker: RunningBroker,
) -> None:
    # Would fail if: the body deadline of a request pipelined behind a long response
    # (a revocation feed stream) ran while reading was paused for its turn, and its 408
    # was written into the middle of that response.
    token = broker.admin_token()
    sock = _connect(broker)
    try:
        sock.send(
            b"GET /v1/revocations/stream HTTP/1.1\r\nHost: broker\r\n"
            b"authorization: Bearer " + token.encode() + b"\r\n\r\n"
            b"POST /v1/token/validate HTTP/1.1\r\nHost: broker\r\n"
            b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{"
        )
        received = bytearray()
        began = time.monotonic()
        while time.monotonic() - began < BODY_TIMEOUT + 1.5:
            assert not _closed_by_server(sock, received), bytes(received)
            time.sleep(0.1)
        assert received.startswith(b"HTTP/1.1 200 "), bytes(received)
        assert b"text/event-stream" in received.lower()
        assert b"HTTP/1.1 408" not in received
    finally:
        sock.close()


def test_connections_past_the_cap_are_turned_away_as_they_arrive(tmp_path: Path) -> None:
    # Would fail if: a process accepted connections without bound, so clients holding
    # them open took every descriptor it has (its database's and its other clients').
    cap = 16
    env = {
        **SHARED_ENV,
        "TASKLEASE_HTTP_MAX_CONNECTIONS": str(cap),
        "TASKLEASE_HTTP_KEEPALIVE_TIMEOUT": "30",
    }
    capped = launch_broker(tmp_path / "data", env)
    held: list[socket.socket] = []
    try:
        host, port = capped.url.removeprefix("http://").split(":")
        capped.client.close()  # the launcher's own kept-alive connections
        held = _hold(capped.url, cap + 1)
        # The launcher's connections may not all be gone yet: at most cap, at least most.
        assert cap - 3 <= len(held) < cap + 1, len(held)
        head, _, body = _turned_away(capped.url).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), head
        assert b"retry-after: 1" in head.lower() and b"connection: close" in head.lower()
        assert b'"error_code":"service_unavailable"' in body
        # The operator is told, once a minute at most, not once per connection.
        wait_until_logged = time.monotonic() + GRACE
        while "turned away 1 connection(s) with 503" not in capped.log():
            assert time.monotonic() < wait_until_logged, capped.log()[-2000:]
            time.sleep(0.05)
        held.pop().close()  # one slot free: the next client is served
        wait_answering(f"{capped.url}/v1/health/live", within=GRACE)
        for sock in held:  # the held connections were never disturbed
            sock.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: broker\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
        stop_broker(capped)


def test_requests_sent_far_ahead_of_their_answers_close_the_connection(
    broker: RunningBroker,
) -> None:
    # Would fail if: a client that sends requests without reading the answers made the
    # process queue every one of them (each a parsed request held in memory: 2 MB of
    # them took 250 MB).
    sock = _connect(broker)
    try:
        sock.setblocking(True)
        sock.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: broker\r\n\r\n" * 200)
        sock.setblocking(False)
        received, _ = _wait_closed(sock, GRACE)
    finally:
        sock.close()
    assert received.count(b"HTTP/1.1 200 ") <= MAX_PIPELINED + 1
    # A client that reads its answers may still send a few ahead.
    sock = _connect(broker)
    try:
        sock.setblocking(True)
        sock.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: broker\r\n\r\n" * 4)
        answers = bytearray()
        while answers.count(b"HTTP/1.1 200 ") < 4:
            answers += sock.recv(65536)
    finally:
        sock.close()


def test_a_header_section_past_its_cap_is_refused_431_and_a_large_one_is_served(
    broker: RunningBroker,
) -> None:
    # Would fail if: the header deadline were the only bound on a request's headers, so
    # one connection streaming header lines for its seconds took gigabytes.
    host, port = broker.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        big = b"x-big: " + b"a" * 100_000 + b"\r\n"
        sock.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: broker\r\n" + big + b"\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    sock = _connect(broker)
    try:
        sock.setblocking(True)
        sock.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: broker\r\n")
        line = b"a: b\r\n" * 10_000
        try:
            for _ in range((MAX_HEADER_BYTES // len(line)) + 4):
                sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.setblocking(False)
        received, _ = _wait_closed(sock, GRACE)
    finally:
        sock.close()
    assert received.startswith(b"HTTP/1.1 431 "), received[:200]
    assert b'"error_code":"headers_too_large"' in received


def _hold(url: str, most: int) -> list[socket.socket]:
    """Up to ``most`` connections, each answered once and kept alive (held by the
    server), until one is refused."""
    host, port = url.removeprefix("http://").split(":")
    held = []
    while len(held) < most:
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: broker\r\n\r\n")
        if not sock.recv(65536).startswith(b"HTTP/1.1 200 "):
            sock.close()
            break
        held.append(sock)
    return held


def _turned_away(url: str) -> bytes:
    """What one more connection receives before the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    extra = socket.create_connection((host, int(port)), timeout=5)
    extra.setblocking(False)
    try:
        received, _ = _wait_closed(extra, GRACE)
    finally:
        extra.close()
    return received


def _websocket_refused(url: str) -> bytes:
    """An upgrade to WebSocket, which the broker (serving no WebSocket route) does not
    make: what it answered."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"GET /v1/health/live?token=eyJhbGciOiJFZERTQSJ9.marker HTTP/1.1\r\n"
            b"Host: broker\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = sock.recv(65536)
    assert answer and not answer.startswith(b"HTTP/1.1 101"), answer
    return answer


@pytest.mark.parametrize("trusted", [False, True])
def test_one_client_holds_at_most_its_share_unless_it_is_a_trusted_proxy(
    tmp_path: Path, trusted: bool
) -> None:
    # Would fail if: one address could hold every connection a process accepts (cycling
    # each within its deadlines, it never has to let go), or the proxies in front, through
    # which every client comes, were held to one client's share.
    share = 8
    env = {
        **SHARED_ENV,
        "TASKLEASE_HTTP_MAX_CONNECTIONS_PER_CLIENT": str(share),
        "TASKLEASE_HTTP_KEEPALIVE_TIMEOUT": "30",
    }
    if trusted:
        env["TASKLEASE_TRUSTED_PROXIES"] = "127.0.0.1"
    capped = launch_broker(tmp_path / "data", env)
    held: list[socket.socket] = []
    try:
        capped.client.close()  # the launcher's own kept-alive connections
        for _ in range(2 * share):  # upgrades to WebSocket, none made, none kept counted
            _websocket_refused(capped.url)
        assert "eyJhbGciOiJFZERTQSJ9.marker" not in capped.log()  # no path, no query
        time.sleep(0.2)  # the upgrade attempts' connections closed on the server's side
        held = _hold(capped.url, 3 * share)
        if trusted:  # a proxy is not held to a client's share
            assert len(held) == 3 * share
            return
        # The launcher's connections may not all be gone yet: at most its share.
        assert share - 3 <= len(held) <= share, len(held)
        received = _turned_away(capped.url)
        assert received.startswith(b"HTTP/1.1 503 "), received
        assert b'"error_code":"service_unavailable"' in received
        logged = time.monotonic() + GRACE
        while "http_max_connections_per_client" not in capped.log():
            assert time.monotonic() < logged, capped.log()[-2000:]
            time.sleep(0.05)
        held.pop().close()  # its share freed by one: it is served again
        wait_answering(f"{capped.url}/v1/health/live", within=GRACE)
    finally:
        for sock in held:
            sock.close()
        stop_broker(capped)


def test_workers_cut_off_silent_connections(tmp_path: Path) -> None:
    """With ``--workers`` the timeouts reach every worker process."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    port = free_port()
    env = _clean_env(data, ENV, with_secret=True)
    init_data_dir(data, env)
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasklease.cli.main", "serve", "--data-dir", str(data)]
            + ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(tmp_path),
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_answering(
            f"{url}/v1/health", within=STARTUP_TIMEOUT * 2, proc=proc, log=tmp_path / "serve.log"
        )
        # Health answered from one worker: the other must serve too before the clock starts.
        wait_workers_listening(proc.pid, port, 2, database="tasklease.db")
        # Several connections, so both workers (SO_REUSEPORT spreads them) get some.
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]
        try:
            opened = time.monotonic()
            for sock in socks:
                sock.setblocking(False)
            for sock in socks:
                received, closed = _wait_closed(sock, HEADER_TIMEOUT + GRACE)
                assert received.startswith(b"HTTP/1.1 408 ")
                assert closed - opened >= HEADER_TIMEOUT - 0.5
        finally:
            for sock in socks:
                sock.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
