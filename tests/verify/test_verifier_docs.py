"""The Python blocks of docs/verifier.md, run as written against a live broker: the
verifier, the FastAPI service and the MCP server, with the names the text gives them
(``broker_url``, ``client_id``, ``client_secret``, ``bearer``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tasklease.client import Agent
from tasklease.client.testing import BrokerForTests
from tasklease.verify import InsufficientScope, Verifier
from tasklease.verify.mcp import TaskleaseTokenVerifier

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "verifier.md"
MARK = "<!-- snippet: run by tests/verify/test_verifier_docs.py -->\n```python\n(.*?)^```"


def _blocks() -> list[str]:
    return re.findall(MARK, DOC.read_text(encoding="utf-8"), re.S | re.M)


@pytest.fixture(scope="module")
def orders() -> Iterator[dict[str, Any]]:
    """A broker whose first audience is ``orders-api``, an app, and two agents: one that
    may read order 42 and data 42, one that may read order 42 only."""
    with BrokerForTests(audience=("orders-api", "https://tools.example/mcp")) as broker:
        app = broker.admin().register_app("orders", ["read:orders:*", "read:data:*"])
        both = ["read:orders:42", "read:data:42"]
        reader = Agent.register(broker.url, broker.launch_token(both), "o", "t", both)
        narrow = broker.agent(["read:orders:42"])
        yield {
            "broker_url": broker.url,
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "bearer": reader.token,
            "narrow": narrow.token,
        }
        for agent in (reader, narrow):
            agent.release()
            agent.close()


def test_the_three_blocks_are_marked() -> None:
    assert len(_blocks()) == 3


def test_the_verifier_block_runs_and_checks_scope(orders: dict[str, Any]) -> None:
    namespace = {k: orders[k] for k in ("broker_url", "client_id", "client_secret", "bearer")}
    exec(_blocks()[0], namespace)  # noqa: S102 - the documentation's own code
    verifier: Verifier = namespace["verifier"]
    try:
        assert namespace["token"].aud == ("orders-api",)
        token = verifier.verify(orders["narrow"])
        with pytest.raises(InsufficientScope):
            verifier.require_scope(token, "read:orders:43")
    finally:
        verifier.close()


def test_the_fastapi_block_serves_what_the_scope_allows(orders: dict[str, Any]) -> None:
    namespace = {k: orders[k] for k in ("broker_url", "client_id", "client_secret", "bearer")}
    exec(_blocks()[0], namespace)  # noqa: S102
    exec(_blocks()[1], namespace)  # noqa: S102 - uses the verifier of the first block
    try:
        with TestClient(namespace["app"]) as http:
            allowed = http.get("/data/42", headers={"Authorization": f"Bearer {orders['bearer']}"})
            refused = http.get("/data/42", headers={"Authorization": f"Bearer {orders['narrow']}"})
            anonymous = http.get("/data/42")
        assert allowed.status_code == 200
        assert refused.status_code == 403
        assert refused.json()["error_code"] == "insufficient_scope"
        assert anonymous.status_code == 401
    finally:
        namespace["verifier"].close()


def test_the_mcp_block_refuses_a_token_for_another_resource(orders: dict[str, Any]) -> None:
    namespace = {k: orders[k] for k in ("broker_url", "client_id", "client_secret")}
    exec(_blocks()[2], namespace)  # noqa: S102
    verifier: Verifier = namespace["verifier"]
    try:
        assert namespace["server"] is not None
        check = TaskleaseTokenVerifier(verifier)
        assert asyncio.run(check.verify_token(orders["bearer"])) is None  # for orders-api
    finally:
        verifier.close()
