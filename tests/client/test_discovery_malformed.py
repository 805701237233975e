"""Discovery reads documents a resource server (and the hosts it names) writes: a URL in
them that ``urllib`` cannot split (``https://[x``: an IPv6 literal never closed) made
``discover`` raise ``ValueError`` out of the SDK, as did a ``resource_metadata`` URL
that httpx cannot send to (``httpx.InvalidURL``), and an authorization server named
with a query made the whole discovery fail. An authorization server whose URL or token
endpoint is malformed is left out, as one over plain HTTP is; a metadata URL that is no
http(s) URL is ``bad_metadata``."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tasklease.client import TaskleaseError, adiscover, discover

RESOURCE = "https://tools.example/mcp"
MALFORMED = ["https://[x", "https://[::1", "https://a.example:99999999999", "https://a.example?x=1"]


def _transport(servers: list[str], endpoint: str | None = None) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/.well-known/oauth-protected-resource"):
            return httpx.Response(
                200, json={"resource": RESOURCE, "authorization_servers": servers}
            )
        issuer = f"https://{request.url.host}"
        token = endpoint if endpoint is not None else f"{issuer}/token"
        return httpx.Response(200, json={"issuer": issuer, "token_endpoint": token})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("bad", MALFORMED)
def test_a_malformed_authorization_server_is_left_out(bad: str) -> None:
    found = discover(RESOURCE, transport=_transport([bad, "https://good.example"]))
    assert [s.issuer for s in found.authorization_servers] == ["https://good.example"]


@pytest.mark.parametrize("bad", MALFORMED[:3])
def test_a_malformed_token_endpoint_is_left_out(bad: str) -> None:
    found = discover(RESOURCE, transport=_transport(["https://as.example"], endpoint=bad))
    assert found.authorization_servers == ()


@pytest.mark.parametrize("bad", ["https://[x", "ftp://tools.example/m", "not a url"])
def test_a_malformed_metadata_url_is_bad_metadata(bad: str) -> None:
    with pytest.raises(TaskleaseError) as refused:
        discover(RESOURCE, metadata_url=bad, transport=_transport([]))
    assert refused.value.code == "bad_metadata"


def test_async_discovery_leaves_a_malformed_server_out() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return _transport(["https://[x", "https://good.example"]).handle_request(request)

    async def run() -> tuple[str, ...]:
        found = await adiscover(RESOURCE, transport=httpx.MockTransport(handler))
        return tuple(s.issuer for s in found.authorization_servers)

    assert asyncio.run(run()) == ("https://good.example",)


def test_a_malformed_metadata_url_is_found_in_a_challenge_and_refused() -> None:
    # The resource server writes the challenge the metadata URL is read from.
    from tasklease.client._oauth import resource_metadata_url

    named = resource_metadata_url('Bearer error="invalid_token", resource_metadata="https://[x"')
    assert named == "https://[x"
    with pytest.raises(TaskleaseError) as refused:
        discover(RESOURCE, metadata_url=named, transport=_transport([]))
    assert refused.value.code == "bad_metadata"
