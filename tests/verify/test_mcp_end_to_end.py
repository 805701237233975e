"""MCP end to end, as the MCP authorization spec has it: the ``mcp`` package's own client
and server over streamable HTTP on loopback, the server protected by
``tasklease.verify.mcp``.

The server publishes RFC 9728 metadata naming the broker and answers an anonymous call
with 401 and ``resource_metadata``; the agent follows it to the broker's RFC 8414
metadata, obtains a token for that server alone by token exchange, and calls a tool
through the ``mcp`` client (an httpx2 client carrying the SDK's ``auth_for``). A token
for another MCP server is refused, and the agent cannot widen its token to one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from e2e_support import SHARED_ENV, RunningBroker, free_port, launch_broker, stop_broker
from verify_support import Served, app_credentials

from tasklease.client import AsyncAgent, InvalidTarget, adiscover
from tasklease.client._oauth import resource_metadata_url
from tasklease.verify import Verifier

pytest.importorskip("mcp")
httpx2 = pytest.importorskip("httpx2")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
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


@pytest.fixture(scope="module")
def issuer_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker whose issuer is its URL, as MCP clients need (RFC 8414 section 3.3)."""
    port = free_port()
    env = {**SHARED_ENV, "TASKLEASE_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    running = launch_broker(tmp_path_factory.mktemp("mcp-broker"), env, port=port)
    yield running
    stop_broker(running)


def _mcp_server(broker: RunningBroker, resource: str) -> Any:
    verifier = Verifier(
        broker.url,
        audience=resource,
        issuer=broker.url,  # the broker's iss is its public URL
        credentials=app_credentials(broker),
    )
    server = MCPServer(
        "tickets",
        token_verifier=TaskleaseTokenVerifier(verifier),
        auth=auth_settings(broker.url, resource),
    )

    @server.tool()
    def lookup_ticket(ticket_id: str) -> str:
        """Look a ticket up."""
        return f"ticket {ticket_id}: printer on fire"

    return server.streamable_http_app(json_response=True, stateless_http=True)


async def _call_tool(url: str, auth: Any) -> str:
    async with (
        httpx2.AsyncClient(auth=auth, timeout=15) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        assert [tool.name for tool in tools.tools] == ["lookup_ticket"]
        result = await session.call_tool("lookup_ticket", {"ticket_id": "4711"})
        assert not result.is_error, result
        text: str = result.content[0].text  # type: ignore[union-attr]
        return text


def test_an_mcp_client_gets_an_audience_bound_token_and_calls_a_tool(
    issuer_broker: RunningBroker, serve: Callable[..., Served]
) -> None:
    ports = free_port(), free_port()
    tickets, other = (f"http://127.0.0.1:{port}/mcp" for port in ports)
    serve(_mcp_server(issuer_broker, tickets), ports[0])
    serve(_mcp_server(issuer_broker, other), ports[1])

    # An anonymous call: 401 naming the resource's metadata (RFC 9728 section 5.1).
    anonymous = httpx.post(tickets, json=_INITIALIZE, headers=_HEADERS, timeout=10)
    assert anonymous.status_code == 401
    metadata_url = resource_metadata_url(anonymous.headers["www-authenticate"])
    assert metadata_url == f"http://127.0.0.1:{ports[0]}/.well-known/oauth-protected-resource/mcp"

    # Each agent may reach its own MCP server (the launch token names it, RFC 8707).
    launch = issuer_broker.launch_token(["read:tickets:*"], resource=[tickets])
    launch_other = issuer_broker.launch_token(["read:tickets:*"], resource=[other])

    async def run() -> None:
        found = await adiscover(tickets, metadata_url=metadata_url)
        assert found.resource == tickets
        [server] = found.authorization_servers
        assert server.issuer == issuer_broker.url  # the broker, checked by RFC 8414 3.3
        assert server.token_endpoint == f"{issuer_broker.url}/v1/oauth/token"
        agent = await AsyncAgent.register(
            server.issuer, launch, "desk", "t-4711", ["read:tickets:4711"], resource=tickets
        )
        stranger = await AsyncAgent.register(
            server.issuer, launch_other, "desk", "t-1", ["read:tickets:1"], resource=other
        )
        async with agent, stranger:
            # A token for the ticket server alone, by token exchange, then the tool.
            auth = agent.auth_for(tickets, ["read:tickets:4711"])
            assert await _call_tool(tickets, auth) == "ticket 4711: printer on fire"
            token = await agent.exchange(tickets)
            assert token.resource == tickets and token.scope == ("read:tickets:4711",)

            # The agent cannot turn its token into one for another server.
            with pytest.raises(InvalidTarget):
                await agent.exchange(other)

            # A token minted for the other server is refused by the ticket server.
            foreign = await stranger.exchange(other)
            async with httpx2.AsyncClient(timeout=10) as http:
                refused = await http.post(
                    tickets,
                    json=_INITIALIZE,
                    headers={**_HEADERS, **foreign.headers("POST", tickets)},
                )
                assert refused.status_code == 401
                assert 'error="invalid_token"' in refused.headers["www-authenticate"]
                assert "resource_metadata=" in refused.headers["www-authenticate"]
                # ...and accepted by its own server.
                accepted = await http.post(
                    other, json=_INITIALIZE, headers={**_HEADERS, **foreign.headers("POST", other)}
                )
                assert accepted.status_code == 200, accepted.text

    asyncio.run(run())
