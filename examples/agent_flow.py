"""An agent's whole life: launch, register, call a service and an MCP server, delegate to
a sub-agent that calls the service too, and release.

    TASKLEASE_BROKER_URL=http://127.0.0.1:8080 TASKLEASE_ADMIN_SECRET=... \
    SERVICE_URL=http://127.0.0.1:8001 MCP_URL=http://127.0.0.1:8002/mcp \
    python examples/agent_flow.py

A token is for one resource (RFC 8707): the service's token carries the broker's default
audience (the service's ``SERVICE_AUDIENCE``), and the MCP server's is minted for its URL
by a launch token that names it.

Prints one JSON line per step; exits non-zero if a step does not go as expected.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from tasklease.client import AdminClient, Agent


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"unexpected: {what}")


def step(name: str, **details: Any) -> None:
    print(json.dumps({"step": name, **details}), flush=True)


def call_mcp_tool(
    mcp_url: str, bearer: dict[str, str], tool: str, arguments: dict[str, Any]
) -> Any:
    """A stateless streamable-HTTP MCP call: initialize, then tools/call (JSON-RPC 2.0)."""
    headers = {**bearer, "Accept": "application/json, text/event-stream"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "agent-flow", "version": "1"},
        },
    }
    response = httpx.post(mcp_url, json=init, headers=headers, timeout=10)
    response.raise_for_status()
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    response = httpx.post(mcp_url, json=call, headers=headers, timeout=10)
    response.raise_for_status()
    return response.json()["result"]["content"][0]["text"]


def call_mcp_status(mcp_url: str, bearer: dict[str, str]) -> int:
    """The status of an MCP initialize with ``bearer`` (401 for a token of another resource)."""
    headers = {**bearer, "Accept": "application/json, text/event-stream"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "agent-flow", "version": "1"},
        },
    }
    return httpx.post(mcp_url, json=init, headers=headers, timeout=10).status_code


def main() -> None:
    broker = os.environ["TASKLEASE_BROKER_URL"]
    service = os.environ["SERVICE_URL"]
    mcp_url = os.environ.get("MCP_URL")
    scope = ["read:data:42", "read:tickets:*"]

    with AdminClient(broker, os.environ["TASKLEASE_ADMIN_SECRET"]) as admin:
        launch = admin.create_launch_token("researcher", scope)["launch_token"]
        sub_launch = admin.create_launch_token("summarizer", ["read:data:42"])["launch_token"]

    with Agent.register(broker, launch, "orch-demo", "task-4711", scope) as agent:
        step("registered", agent_id=agent.agent_id)

        answer = httpx.get(f"{service}/data/42", auth=agent.auth, timeout=10)
        expect(answer.status_code == 200, answer.text)
        step("called service", status=answer.status_code, body=answer.json())

        refused = httpx.post(f"{service}/data/42", auth=agent.auth, timeout=10)
        expect(refused.status_code == 403, refused.text)
        step("write refused", status=refused.status_code, error=refused.json()["error_code"])

        if mcp_url:
            # The service's token is refused there: another resource takes its own token.
            wrong = call_mcp_status(mcp_url, agent.bearer_header)
            expect(wrong == 401, f"the service's token at the MCP server: {wrong}")
            with AdminClient(broker, os.environ["TASKLEASE_ADMIN_SECRET"]) as admin:
                mcp_launch = admin.create_launch_token("researcher", scope, resource=mcp_url)
            with Agent.register(
                broker, mcp_launch["launch_token"], "orch-demo", "task-4711", scope
            ) as for_mcp:
                text = call_mcp_tool(
                    mcp_url, for_mcp.bearer_header, "lookup_ticket", {"ticket_id": "7"}
                )
            step("called MCP tool", result=text)

        with Agent.register(
            broker, sub_launch, "orch-demo", "task-4711-sub", ["read:data:42"]
        ) as sub:
            delegated = agent.delegate(sub.agent_id, ["read:data:42"], ttl=60)
            answer = httpx.get(f"{service}/data/42", auth=delegated.auth, timeout=10)
            expect(answer.status_code == 200, answer.text)
            expect(answer.json()["delegation_depth"] == 1, "delegation depth")
            step("sub-agent called service", status=answer.status_code, body=answer.json())
            delegated.release()
            gone = httpx.get(f"{service}/data/42", auth=delegated.auth, timeout=10)
            step("released delegated token refused", status=gone.status_code)
            expect(gone.status_code == 401, gone.text)
    step("released")


if __name__ == "__main__":
    main()
