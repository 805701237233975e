"""The resource-server snippet of docs/federation.md, run as written against two live
brokers (the home one over HTTP, the federated one's bundle endpoint over HTTPS)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from bundle_support import CTX, admin, make_broker, make_ca, serve_broker

from tasklease.core.clock import SystemClock
from tasklease.core.tokens import KIND_AGENT, mint
from tasklease.verify import InvalidToken

DOC = Path(__file__).resolve().parents[2] / "docs" / "federation.md"


def _snippet() -> str:
    text = DOC.read_text()
    found = re.search(
        r"<!-- snippet: run by tests/federation/test_federation_docs.py -->\n```python\n(.*?)```",
        text,
        re.S,
    )
    assert found, "no snippet block in docs/federation.md"
    return found.group(1)


def test_the_verifier_snippet_accepts_a_federated_token_within_its_ceiling(
    tmp_path: Path,
) -> None:
    ca = make_ca(tmp_path)
    home = make_broker("a.example", clock=SystemClock(), audience=("orders-api",))
    peer = make_broker("b.example", clock=SystemClock(), audience=("orders-api",))
    app, secret = home.register_app(
        admin(home).claims, name="orders", scopes=["read:orders:*"], token_ttl=600, ctx=CTX
    )
    with serve_broker(home) as home_served, serve_broker(peer, ca.server("127.0.0.1")) as b:
        code = (
            _snippet()
            .replace('"https://a.example",  # the home', f'"{home_served.url}",  # the home')
            .replace("https://b.example/v1/federation/bundle", f"{b.url}/v1/federation/bundle")
            .replace('"b-ca.pem"', repr(str(ca.path)))
        )
        scope: dict[str, Any] = {"client_id": app.client_id, "client_secret": secret}
        exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - the documented snippet
        verifier = scope["verifier"]
        try:
            assert verifier.ready
            token, _ = mint(
                peer.keyring,
                kind=KIND_AGENT,
                iss="https://b.example",
                sub="spiffe://b.example/agent/orch/task/0123456789abcdef",
                aud=("orders-api",),
                iat=int(time.time()),
                ttl=120,
                scope=("read:orders:7",),
                client_id="app-b",
            )
            assert verifier.verify(token).scope == ("read:orders:7",)
            wider, _ = mint(
                peer.keyring,
                kind=KIND_AGENT,
                iss="https://b.example",
                sub="spiffe://b.example/agent/orch/task/0123456789abcdef",
                aud=("orders-api",),
                iat=int(time.time()),
                ttl=120,
                scope=("write:orders:7",),
                client_id="app-b",
            )
            with pytest.raises(InvalidToken):
                verifier.verify(wider)
        finally:
            verifier.close()
