"""MCP authorization (Model Context Protocol, basic/authorization, 2025-06-18, 2025-11-25).

An MCP server built on the ``mcp`` SDK and ``tasklease.verify.mcp`` is an OAuth resource
server of the broker.

A real MCP server on loopback (streamable HTTP), tokens from the running broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conformance_support import ISSUER, Kit, parts, www_authenticate
from e2e_support import free_port
from mcp.server.mcpserver import MCPServer

from tasklease.verify import AppCredentials, Verifier
from tasklease.verify.mcp import TaskleaseTokenVerifier, auth_settings

NOT_APPLICABLE = {
    "authorization code flow with PKCE, client registration": "an MCP client's OAuth "
    "flow with an authorization endpoint: agents get tokens by registration or token "
    "exchange (RFC 8693), which the MCP client-credentials style extensions allow",
}
COVERED_ELSEWHERE = {
    "RFC 8414 authorization server metadata (the issuer it names is the tokens' iss)": (
        "http/test_oauth_clients.py::"
        "test_metadata_names_each_tenants_issuer_where_rfc_8414_clients_look"
    ),
}

_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "conformance", "version": "1"},
    },
}
_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def mcp_server(kit: Kit) -> Iterator[tuple[str, str]]:
    from verify_support import serve_app

    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    app_ = kit.broker.create_app(["read:data:*"], name="mcp-conformance")
    verifier = Verifier(
        kit.url,
        audience=resource,
        issuer=ISSUER,
        credentials=AppCredentials(app_["client_id"], app_["client_secret"]),
    )
    server = MCPServer(
        "tools",
        token_verifier=TaskleaseTokenVerifier(verifier),
        auth=auth_settings(kit.url, resource, issuer=ISSUER),
    )

    @server.tool()
    def echo(text: str) -> str:
        return text

    served = serve_app(server.streamable_http_app(json_response=True, stateless_http=True), port)
    yield served.url, resource
    served.stop()
    verifier.close()


def _call(url: str, token: str | None) -> httpx.Response:
    headers = {**_HEADERS, **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(f"{url}/mcp", json=_INITIALIZE, headers=headers, timeout=10)


def test_mcp_token_audience_validation_accepts_tokens_for_this_server(
    kit: Kit, mcp_server: tuple[str, str]
) -> None:
    """Token handling: a token minted for this server's resource (RFC 8707 `resource` at
    the broker) is accepted."""
    url, resource = mcp_server
    agent = kit.register(launch={"resource": [resource]})
    assert parts(agent.token)[1]["aud"] == [resource]
    answer = _call(url, agent.token)
    assert answer.status_code == 200, answer.text


def test_mcp_token_audience_validation_refuses_other_audiences(
    kit: Kit, mcp_server: tuple[str, str]
) -> None:
    """Token handling: servers MUST validate that tokens were issued for them: a token for
    another resource, or the broker's default audience, is refused (401) — no token
    passthrough."""
    url, _ = mcp_server
    for agent in (kit.register(), kit.register(launch={"resource": ["https://other.example/mcp"]})):
        answer = _call(url, agent.token)
        assert answer.status_code == 401
        assert www_authenticate(answer)["Bearer"]["error"] == "invalid_token"


def test_mcp_authorization_401_without_a_token(mcp_server: tuple[str, str]) -> None:
    """Authorization flow: a request without a token is answered 401 with a Bearer
    challenge."""
    url, _ = mcp_server
    answer = _call(url, None)
    assert answer.status_code == 401 and "Bearer" in www_authenticate(answer)


def test_mcp_protected_resource_metadata_names_the_brokers_issuer(
    mcp_server: tuple[str, str],
) -> None:
    """Authorization server location (RFC 9728 §2 and §3): the server's protected-resource
    metadata names its `resource` and, as authorization server, the broker's issuer, which
    is the tokens' `iss` (RFC 8414 §3.3)."""
    url, resource = mcp_server
    answer = httpx.get(f"{url}/.well-known/oauth-protected-resource/mcp", timeout=10)
    assert answer.status_code == 200, answer.text
    metadata: dict[str, Any] = answer.json()
    assert metadata["resource"] == resource
    assert [server.rstrip("/") for server in metadata["authorization_servers"]] == [ISSUER]
