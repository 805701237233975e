"""The console's launch-token page shows whether each token is bound to its agent's key
(``agent_key``, docs/agents.md), in process over the app's ASGI interface."""

from __future__ import annotations

import base64
import re

import httpx
from nacl.signing import SigningKey
from tests.console.console_support import ADMIN_SECRET, CTX, in_process_broker, run, sign_in

from tasklease.rules import jws


def test_the_page_shows_which_launch_tokens_are_bound_to_a_key() -> None:
    broker = in_process_broker()
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    key = bytes(SigningKey.generate().verify_key)
    for agent_key in (base64.b64encode(key).decode(), None):
        broker.create_launch_token(
            admin,
            agent_name="bound" if agent_key else "unbound",
            allowed_scope=["read:data:*"],
            max_ttl=None,
            single_use=None,
            ttl=600,
            ctx=CTX,
            agent_key=agent_key,
        )

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        signed = await sign_in(client)
        assert signed.status_code == 303, signed.text
        return await client.get("/console/launch-tokens")

    page = run(broker, go)
    assert page.status_code == 200, page.text
    rows = re.findall(r"<tr><td.*?</tr>", page.text, re.S)
    [bound] = [r for r in rows if "<td>bound</td>" in r]
    [unbound] = [r for r in rows if "<td>unbound</td>" in r]
    assert f'<td class="mono">{jws.b64url_encode(key)[:12]}…</td>' in bound
    assert '<td class="mono">any</td>' in unbound


def test_a_bidi_control_in_a_name_is_shown_escaped() -> None:
    """A U+202E in a launch token's agent name would show the rest of its cell, and of the
    row in many renderings, reversed: the page writes it ``\\u202e`` (rules.controls)."""
    broker = in_process_broker()
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    broker.create_launch_token(
        admin,
        agent_name="invoice\u202egpj.exe",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=600,
        ctx=CTX,
    )

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        signed = await sign_in(client)
        assert signed.status_code == 303, signed.text
        return await client.get("/console/launch-tokens")

    page = run(broker, go)
    assert page.status_code == 200, page.text
    assert "\u202e" not in page.text
    assert "<td>invoice\\u202egpj.exe</td>" in page.text
