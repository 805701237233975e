"""Checks on a presented token that each refuse on their own: holder binding at the
broker's own endpoints, introspection's kinds and audience, the validator's bounds."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tasklease.core.broker import RequestContext
from tasklease.core.errors import Unauthorized
from tasklease.core.tokens import KIND_AGENT, mint

CTX = RequestContext(request_id="req-p", remote="10.0.0.1", path="/v1/token/renew")
SUB = "spiffe://tasklease.local/agent/o/t/00000000000000bb"
THUMBPRINT = "c" * 43


def agent_token(broker: Any, **overrides: Any) -> str:
    cfg = broker.config
    args: dict[str, Any] = {
        "kind": KIND_AGENT,
        "iss": cfg.issuer,
        "sub": SUB,
        "aud": cfg.audience,
        "iat": int(broker.clock.now()),
        "ttl": 300,
        "scope": ("read:data:1",),
        "client_id": "admin",
        "task_id": "t",
        "orch_id": "o",
    }
    args.update(overrides)
    return mint(broker.keyring, **args)[0]


def test_authenticate_refuses_a_certificate_bound_token_without_its_certificate(
    broker: Any,
) -> None:
    token = agent_token(broker, cnf={"x5t#S256": THUMBPRINT})
    for ctx, reason in (
        (CTX, "without a client certificate"),
        (replace(CTX, cert_thumbprint="d" * 43), "with another certificate"),
    ):
        with pytest.raises(Unauthorized) as info:
            broker.authenticate(f"Bearer {token}", ctx)
        assert reason in info.value.reason
    holder = replace(CTX, cert_thumbprint=THUMBPRINT)
    assert broker.authenticate(f"Bearer {token}", holder).sub == SUB


def test_authenticate_refuses_a_dpop_bound_token_as_bearer_or_without_a_proof(
    broker: Any,
) -> None:
    token = agent_token(broker, cnf={"jkt": "k" * 43})
    with pytest.raises(Unauthorized) as info:
        broker.authenticate(f"Bearer {token}", CTX)
    assert "presented as a bearer token" in info.value.reason
    with pytest.raises(Unauthorized) as info:
        broker.authenticate(f"DPoP {token}", CTX)
    assert info.value.challenge is not None
    assert info.value.challenge[1] == "invalid_dpop_proof"
