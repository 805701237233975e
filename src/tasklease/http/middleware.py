"""The envelope every response gets, as one pure-ASGI middleware.

- ``X-Request-ID``: echoed when the caller sent a sane one (at most 128 characters of
  ``[A-Za-z0-9._:-]``), otherwise 16 random hex characters; stored in the ASGI scope.
- Security headers on every response, 413s included.
- Body limit: the body is read eagerly through a cap (1 MiB by default); a larger body,
  declared or streamed, gets a 413 problem before any route runs.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tasklease.http.problems import problem_body

__all__ = ["EnvelopeMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_BASE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


class EnvelopeMiddleware:
    def __init__(self, app: ASGIApp, *, max_body: int, hsts: bool) -> None:
        self.app = app
        self.max_body = max_body
        self.headers = [*_BASE_HEADERS, _HSTS] if hsts else list(_BASE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        declared = -1
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"content-length" and value.isdigit():
                declared = int(value)
        if not _SAFE_ID.match(request_id):
            request_id = secrets.token_hex(8).encode()
        rid = request_id.decode()
        scope.setdefault("state", {})["request_id"] = rid
        extra = [*self.headers, (b"x-request-id", request_id)]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                # A handler may set its own policy (the JWKS is cacheable); keep it.
                headers.extend(h for h in extra if h[0] not in present)
                message["headers"] = headers
            await send(message)

        if declared > self.max_body:
            await self._too_large(scope, send_with_headers, rid)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(scope, send_with_headers, rid)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)

    async def _too_large(self, scope: Scope, send: Send, rid: str) -> None:
        body = problem_body(
            "payload_too_large",
            f"request body must not exceed {self.max_body} bytes",
            instance=scope.get("path", ""),
            request_id=rid,
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
