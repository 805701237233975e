"""An MCP server (``mcp`` SDK, streamable HTTP) that accepts only tokens minted for it.

    TASKLEASE_BROKER_URL=http://127.0.0.1:8080 TASKLEASE_CLIENT_ID=... \
    TASKLEASE_CLIENT_SECRET=... MCP_RESOURCE_URL=http://127.0.0.1:8002/mcp PORT=8002 \
    python examples/mcp_server.py

The resource URL is the audience: tokens for it come from a launch token that names it as
its ``resource`` (RFC 8707), and a token minted for any other resource is answered with
401. A broker with a ``public_url`` signs its first one as its issuer: give it as
``TASKLEASE_ISSUER``.
"""

from __future__ import annotations

import os

import uvicorn
from mcp.server.mcpserver import MCPServer

from tasklease.verify import AppCredentials, Verifier
from tasklease.verify.mcp import TaskleaseTokenVerifier, auth_settings


def build_server(verifier: Verifier, broker_url: str, resource_url: str) -> MCPServer:
    server = MCPServer(
        "tickets",
        token_verifier=TaskleaseTokenVerifier(verifier),
        auth=auth_settings(broker_url, resource_url),
    )

    @server.tool()
    def lookup_ticket(ticket_id: str) -> str:
        """Look a ticket up."""
        return f"ticket {ticket_id}: printer on fire"

    return server


def main() -> None:
    broker_url = os.environ["TASKLEASE_BROKER_URL"]
    resource_url = os.environ["MCP_RESOURCE_URL"]
    verifier = Verifier(
        broker_url,
        audience=resource_url,
        # The broker's `iss`: its first public_url when it has one (docs/configuration.md).
        issuer=os.environ.get("TASKLEASE_ISSUER", "tasklease"),
        credentials=AppCredentials(
            os.environ["TASKLEASE_CLIENT_ID"], os.environ["TASKLEASE_CLIENT_SECRET"]
        ),
    )
    server = build_server(verifier, broker_url, resource_url)
    app = server.streamable_http_app(json_response=True, stateless_http=True)
    port = int(os.environ.get("PORT", "8002"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
