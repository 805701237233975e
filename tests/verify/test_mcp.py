"""An MCP server (``mcp`` SDK) accepts only tokens minted for its own resource."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from e2e_support import RunningBroker, free_port
from verify_support import MCP_PORT, MCP_RESOURCE, app_credentials

from tasklease.verify import Verifier

pytest.importorskip("mcp")

from mcp.server.mcpserver import MCPServer  # noqa: E402

from tasklease.verify.mcp import TaskleaseTokenVerifier, auth_settings  # noqa: E402

pytestmark = pytest.mark.slow

_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _server(broker: RunningBroker, resource: str, advertised: str | None = None) -> Any:
    verifier = Verifier(broker.url, audience=resource, credentials=app_credentials(broker))
    server = MCPServer(
        "tools",
        token_verifier=TaskleaseTokenVerifier(verifier),
        auth=auth_settings(broker.url, advertised or resource),
    )

    @server.tool()
    def echo(text: str) -> str:
        return text

    return server.streamable_http_app(json_response=True, stateless_http=True), verifier


def test_mcp_server_accepts_its_own_audience_and_refuses_another(
    broker: RunningBroker, serve: Any
) -> None:
    own_app, own_verifier = _server(broker, MCP_RESOURCE)
    own = serve(own_app, MCP_PORT)
    other_port = free_port()  # not MCP_PORT's neighbour: another run may hold it
    other_resource = f"http://127.0.0.1:{other_port}/mcp"
    other_app, _ = _server(broker, other_resource)  # the broker never mints this audience
    other = serve(other_app, other_port)
    # A token is for one resource: this one names the MCP server (RFC 8707).
    agent = broker.register(["read:data:42"], resource=[MCP_RESOURCE])
    bearer = {**_HEADERS, **agent.bearer}
    with httpx.Client(timeout=10) as client:
        ok = client.post(f"{own.url}/mcp", json=_INITIALIZE, headers=bearer)
        assert ok.status_code == 200, ok.text
        assert ok.json()["result"]["serverInfo"]["name"] == "tools"
        refused = client.post(f"{other.url}/mcp", json=_INITIALIZE, headers=bearer)
        assert refused.status_code == 401
        assert "invalid_token" in refused.headers["www-authenticate"]
        anonymous = client.post(f"{own.url}/mcp", json=_INITIALIZE, headers=_HEADERS)
        assert anonymous.status_code == 401
    token = own_verifier.verify(agent.access_token)
    assert MCP_RESOURCE in token.aud


def test_a_server_advertising_another_resource_than_its_verifier_accepts_no_token(
    broker: RunningBroker, serve: Any
) -> None:
    """``auth_settings`` has the SDK hold each token's resource to the one the server
    advertises: a server whose verifier is for another resource (a misconfiguration)
    takes none of that resource's tokens as its own."""
    port = free_port()
    app, _ = _server(broker, MCP_RESOURCE, advertised=f"http://127.0.0.1:{port}/mcp")
    served = serve(app, port)
    agent = broker.register(["read:data:42"], resource=[MCP_RESOURCE])
    with httpx.Client(timeout=10) as client:
        refused = client.post(
            f"{served.url}/mcp", json=_INITIALIZE, headers={**_HEADERS, **agent.bearer}
        )
    assert refused.status_code == 401, refused.text
