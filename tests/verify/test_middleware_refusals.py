"""TaskleaseAuthMiddleware's refusals, called in process as an ASGI app (keys served from
memory, clock injected): the application is never reached without a verified token, over
HTTP or a WebSocket; a 401 carries a challenge and a generic body that never says why
the token failed; a client's request id is echoed only when it is safe to."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tasklease.core.keys import KeyRing
from tasklease.core.tokens import KIND_AGENT
from tasklease.verify import Verifier
from tasklease.verify.asgi import TaskleaseAuthMiddleware

NOW = 1_800_000_000
RING = KeyRing.generate()


class _Clock:
    def now(self) -> float:
        return NOW + 1.0


def _token(**changes: Any) -> str:
    claims = {
        "iss": "tasklease",
        "sub": "spiffe://t/agent/o/t/i",
        "aud": ["svc-a"],
        "exp": NOW + 60,
        "nbf": NOW,
        "iat": NOW,
        "jti": "j" * 32,
        "scope": ["read:data:1"],
        "client_id": "c",
        **changes,
    }
    return RING.sign(json.dumps(claims).encode(), KIND_AGENT)


def _call(scope_type: str, headers: list[tuple[bytes, bytes]]) -> tuple[list[Any], list[Any]]:
    """The messages the middleware sent, and the scopes the application saw."""
    reached: list[Any] = []
    sent: list[Any] = []

    async def app(scope: Any, _receive: Any, _send: Any) -> None:
        reached.append(scope)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    verifier = Verifier(
        "https://broker.invalid",
        audience="svc-a",
        feed=False,
        clock=_Clock(),
        transport=httpx.MockTransport(lambda _r: httpx.Response(200, json=RING.jwks())),
    )
    middleware = TaskleaseAuthMiddleware(app, verifier=verifier)
    scope = {
        "type": scope_type,
        "path": "/data",
        "method": "GET",
        "scheme": "http" if scope_type == "http" else "ws",
        "server": ("127.0.0.1", 8000),
        "headers": headers,
    }
    asyncio.run(middleware(scope, receive, send))
    return sent, reached


def _response(sent: list[Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    start, body = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(body["body"])


def test_a_good_token_reaches_the_application() -> None:
    sent, reached = _call("http", [(b"authorization", f"Bearer {_token()}".encode())])
    assert sent == [] and len(reached) == 1


def test_no_token_is_a_401_with_a_bare_challenge_and_the_app_is_not_reached() -> None:
    sent, reached = _call("http", [])
    assert reached == []
    status, headers, body = _response(sent)
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert "error=" not in headers["www-authenticate"]  # RFC 6750 3.1: no token, no code
    assert body["error_code"] == "unauthorized"


def test_a_bad_token_is_a_401_that_does_not_say_why() -> None:
    for bad in (_token(aud=["svc-b"]), _token(iss="evil"), _token(exp=NOW)):
        sent, reached = _call("http", [(b"authorization", f"Bearer {bad}".encode())])
        assert reached == []
        status, headers, body = _response(sent)
        assert status == 401
        assert 'error="invalid_token"' in headers["www-authenticate"]
        assert body["error_code"] == "unauthorized"
        text = json.dumps(body) + headers["www-authenticate"]
        for reason in ("audience", "issuer", "expired", "mismatch"):
            assert reason not in text


def test_a_websocket_without_a_token_is_closed_before_the_application() -> None:
    sent, reached = _call("websocket", [])
    assert reached == []
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_an_unsafe_request_id_is_not_echoed() -> None:
    safe = b"req-1.2:3_4"
    sent, _ = _call("http", [(b"x-request-id", safe)])
    _, headers, body = _response(sent)
    assert headers["x-request-id"] == body["request_id"] == "req-1.2:3_4"
    for unsafe in (b"a b", b'a"b', b"x" * 129, b"<script>"):
        sent, _ = _call("http", [(b"x-request-id", unsafe)])
        _, headers, body = _response(sent)
        assert headers["x-request-id"] == body["request_id"] != unsafe.decode()
