"""Caller text decoded as JSON outside a request body: a listing's ``cursor`` (a query
parameter, base64url of JSON) and the offline peer handshake's messages (anyone may send
a hello). A thousand nested arrays exhausted the decoder's recursion limit: a 500 on the
operators' listing routes, and a ``RecursionError`` out of the SDK's responder instead of
the refusal it documents. Both are refused as malformed."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from security_support import admin, make_broker

from tasklease.core.errors import InvalidRequest
from tasklease.core.inventory import decode_cursor
from tasklease.http.app import create_app
from tasklease.rules import peerauth

DEEP = b"[" * 1000 + b"]" * 1000


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("raw", [DEEP, b"[" * 3000, b'[1,"' + b"x" * 10 + b'",' + DEEP + b"]"])
def test_a_deeply_nested_cursor_is_malformed(raw: bytes) -> None:
    with pytest.raises(InvalidRequest, match="cursor is malformed"):
        decode_cursor(_cursor(raw))


@pytest.mark.parametrize(
    "path", ["/v1/admin/agents", "/v1/admin/launch-tokens", "/v1/admin/revocations"]
)
def test_the_listing_routes_answer_400_to_a_deep_cursor(path: str) -> None:
    broker = make_broker()
    token = admin(broker).token
    app = create_app(broker, background=False)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.get(
                path, params={"cursor": _cursor(DEEP)}, headers={"Authorization": f"Bearer {token}"}
            )

    resp = asyncio.run(run())
    assert resp.status_code == 400, resp.text
    assert resp.json()["detail"] == "cursor is malformed"


@pytest.mark.parametrize(
    "parse", [peerauth.parse_hello, peerauth.parse_answer, peerauth.parse_finish]
)
def test_a_deeply_nested_peer_message_is_refused(parse: object) -> None:
    assert callable(parse)
    with pytest.raises(peerauth.PeerRejected):
        parse(DEEP.decode())
    with pytest.raises(peerauth.PeerRejected):
        parse("[" * 16000)
