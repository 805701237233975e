"""An MCP tool that needs a structured grant: the ``mcp`` package's own client and server
over streamable HTTP on loopback, the server protected by ``tasklease.verify.mcp``, the
broker (its application on the memory store) on loopback too.

The tool ``pay`` asks ``require_tool_grant`` for a payment grant per call: the agent's
token pays 80 EUR to P, not 150 (over its limit) nor to Q, and its third call is refused
once the broker has counted its ``max_calls`` of 2.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from e2e_support import ADMIN_SECRET, free_port

from tasklease.client import AdminClient, AsyncAgent
from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.storage import open_store
from tasklease.verify import AppCredentials, Verifier

pytest.importorskip("mcp")
httpx2 = pytest.importorskip("httpx2")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402

from tasklease.verify.mcp import (  # noqa: E402
    TaskleaseTokenVerifier,
    auth_settings,
    require_tool_grant,
)

pytestmark = pytest.mark.slow


# One time read at import: grants made on either side of a midnight still match.
TODAY = int(time.time()) - 3600


def payment(calls: int) -> dict[str, Any]:
    today = TODAY
    return {
        "type": "resource_access",
        "actions": ["pay"],
        "locations": ["https://pay.example/payees/P"],
        "limits": {"max_amount": "100", "currency": "EUR", "max_calls": calls,
                   "not_before": today, "not_after": today + 2 * 86400,
                   "allowed_values": {"payee": ["P"]}},
    }  # fmt: skip


def test_a_tool_requires_a_grant_and_its_calls_are_counted(serve: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = Config(admin_secret_hash=hash_secret(ADMIN_SECRET), public_url=(url,))
    core = Broker(config, open_store("memory://"), KeyRing.generate(), nonce_secret=b"m" * 32)
    serve(create_app(core, background=False), port)
    admin = AdminClient(url, admin_secret=ADMIN_SECRET)
    app = admin.register_app("payments-mcp", ["read:x:*"])
    tool_port = free_port()
    resource = f"http://127.0.0.1:{tool_port}/mcp"
    verifier = Verifier(
        url,
        audience=resource,
        issuer=url,
        credentials=AppCredentials(app["client_id"], app["client_secret"]),
    )
    server = MCPServer(
        "payments",
        token_verifier=TaskleaseTokenVerifier(verifier),
        auth=auth_settings(url, resource),
    )

    @server.tool()
    async def pay(payee: str, amount: str) -> str:
        """Pay a payee."""
        await require_tool_grant(
            verifier, "resource_access", action="pay",
            location=f"https://pay.example/payees/{payee}",
            amount=amount, currency="EUR", values={"payee": payee},
        )  # fmt: skip
        return f"paid {amount} EUR to {payee}"

    serve(server.streamable_http_app(json_response=True, stateless_http=True), tool_port)
    launch = admin.create_launch_token(
        "payer", [], resource=[resource], authorization_details=[payment(2)]
    )["launch_token"]

    async def run() -> list[tuple[bool, str]]:
        agent = await AsyncAgent.register(
            url, launch, "desk", "t-pay", [], resource=resource,
            authorization_details=[payment(2)],
        )  # fmt: skip
        results = []
        async with (
            agent,
            httpx2.AsyncClient(auth=agent.auth, timeout=15) as http,
            streamable_http_client(resource, http_client=http) as (read, write, *_),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            for payee, amount in (("P", "80"), ("P", "150"), ("Q", "10"), ("P", "20"), ("P", "5")):
                result = await session.call_tool("pay", {"payee": payee, "amount": amount})
                results.append((result.is_error, result.content[0].text))  # type: ignore[union-attr]
        return results

    results = asyncio.run(run())
    assert [error for error, _ in results] == [False, True, True, False, True]
    assert results[0][1] == "paid 80 EUR to P"
    verifier.close()
    admin.close()
