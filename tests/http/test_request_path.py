"""The request's path for DPoP's htu and the audit's resource: what Starlette's URL gives
(``request.url.path``), computed without building the URL, at the root and under a mount."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from tasklease.http.token_routes import request_path

# What an HTTP request line can carry in its path once decoded (no control characters:
# the parser refuses them), including what the URL encodes again (?, #, \) and non-ASCII.
_PATH_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from("?#\\%/ "), max_size=40
)


def _scope(path: str, host: bytes | None) -> dict[str, Any]:
    headers = [(b"host", host)] if host is not None else []
    return {"type": "http", "method": "GET", "path": path, "root_path": "", "scheme": "http",
            "server": ("127.0.0.1", 8080), "query_string": b"a=1", "headers": headers}  # fmt: skip


@given(_PATH_TEXT, st.sampled_from([b"broker.example:8443", b"127.0.0.1", None]))
def test_the_path_is_what_the_url_gives(tail: str, host: bytes | None) -> None:
    scope = _scope("/" + tail, host)
    assert request_path(scope) == Request(scope).url.path


def test_under_a_mount_the_path_keeps_the_mount_prefix() -> None:
    seen: list[tuple[str, str]] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        seen.append((request_path(request.scope), request.url.path))
        return PlainTextResponse("")

    inner = Starlette(routes=[Route("/v1/renew", endpoint, methods=["POST"])])
    app = Starlette(routes=[Mount("/t/{tenant}", app=inner), Route("/v1/renew", endpoint,
                                                                   methods=["POST"])])  # fmt: skip
    with TestClient(app) as client:
        assert client.post("/t/acme/v1/renew").status_code == 200
        assert client.post("/v1/renew?x=%3F").status_code == 200
    assert seen == [("/t/acme/v1/renew", "/t/acme/v1/renew"), ("/v1/renew", "/v1/renew")]
