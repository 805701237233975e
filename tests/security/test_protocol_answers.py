"""What the server answers itself, before any route (a request it cannot parse, headers
too large), carries what every answer does (docs/api.md: a problem body with its
``request_id``, the ``X-Request-ID`` header; docs/compatibility.md: the security
headers), not uvicorn's bare ``text/plain`` "Invalid HTTP request received.".

Against a real broker, over raw sockets (no client sends these).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from pathlib import Path

import pytest
from e2e_support import RunningBroker

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "pragma": "no-cache",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
MALFORMED = {
    "unknown method": b"FOO /v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
    "relative target": b"GET v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
    "length and chunked": b"POST /v1/token/validate HTTP/1.1\r\nHost: x\r\nContent-Length: 4"
    b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "folded header": b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "control byte in a header": b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb\r\n\r\n",
    "headers too large": b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 600_000,
}


def _exchange(broker: RunningBroker, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    port = int(broker.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # Closed while sending (headers too large): what it answered is still to be read.
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_answer_before_any_route_is_a_problem_with_every_header(
    broker: RunningBroker, raw: bytes
) -> None:
    status, headers, body = _exchange(broker, raw)
    assert status in (400, 431), (status, headers, body)
    assert headers["content-type"] == "application/problem+json", headers
    assert headers["connection"] == "close"
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (name, headers)
    problem = json.loads(body)
    assert problem["status"] == status
    assert problem["request_id"] == headers["x-request-id"]
    assert len(headers["x-request-id"]) == 16


def test_each_such_answer_has_its_own_request_id(broker: RunningBroker) -> None:
    ids = {_exchange(broker, MALFORMED["unknown method"])[1]["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_a_malformed_request_is_answered_after_the_requests_ahead_of_it(
    broker: RunningBroker,
) -> None:
    """Pipelined in one write: a revocation, then a request the parser refuses. The
    revocation is answered (200), then the malformed request (400), in order; the 400
    used to come alone, read as the revocation's answer though it had been made."""
    body = b'{"level":"task","target":"pipelined-before-garbage"}'
    token = broker.admin_token().encode()
    revoke = (
        b"POST /v1/revoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    ) % (token, len(body), body)
    port = int(broker.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(revoke + MALFORMED["unknown method"])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"400"], answer
    listed = broker.get("/v1/admin/revocations", headers=broker.admin_headers())
    assert "pipelined-before-garbage" in listed.text


class _Transport:
    """What the protocol writes to a connection, and whether it closed it."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


@pytest.mark.parametrize("tls_mode", ["none", "tls", "mtls"])
def test_the_servers_own_answers_carry_hsts_under_tls(tls_mode: str, tmp_path: Path) -> None:
    """Under TLS every answer of the envelope carries ``Strict-Transport-Security``; the
    answers the protocol writes itself (a parser refusal, 408, 431, the 503 past the
    cap) lacked it. Built as ``serve`` builds the protocol, each answer is written to a
    connection of its own."""
    from uvicorn.config import Config as UvicornConfig
    from uvicorn.server import ServerState

    from tasklease.core.config import Config
    from tasklease.http.protocol import http_protocol

    files = {}
    if tls_mode != "none":
        files = {"tls_cert": str(tmp_path / "c.pem"), "tls_key": str(tmp_path / "k.pem")}
    if tls_mode == "mtls":
        files["tls_client_ca"] = str(tmp_path / "ca.pem")
    config = Config(data_dir=tmp_path, tls_mode=tls_mode, http_max_connections=16, **files)

    async def app(scope: object, receive: object, send: object) -> None: ...

    async def answers() -> dict[str, bytes]:
        uv = UvicornConfig(app, lifespan="off", log_config=None)
        uv.load()
        factory = http_protocol(config)
        written = {}
        for why in ("malformed", "headers late", "headers too large", "busy"):
            state = ServerState()
            if why == "busy":  # the process holds its cap already
                state.connections.update(object() for _ in range(16))  # type: ignore[misc]
            protocol = factory(config=uv, server_state=state, app_state={})
            transport = _Transport()
            protocol.connection_made(transport)
            if why == "malformed":
                protocol.data_received(b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n")
            elif why == "headers late":
                protocol._headers_late()
            elif why == "headers too large":
                protocol.data_received(b"GET / HTTP/1.1\r\nX-A: " + b"a" * 600_000)
            assert transport.closed, why
            written[why] = transport.written
            protocol.connection_lost(None)
        return written

    for why, answer in asyncio.run(answers()).items():
        head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
        assert head.startswith("http/1.1 4") or head.startswith("http/1.1 503"), (why, head)
        if tls_mode == "none":
            assert "strict-transport-security" not in head, (why, head)
        else:
            assert (
                "\r\nstrict-transport-security: max-age=63072000; includesubdomains\r\n" in head
            ), (why, head)
