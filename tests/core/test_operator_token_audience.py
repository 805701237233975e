"""Operators' and apps' tokens are the broker's own: at its endpoints they must carry one
of its configured audiences (only agent tokens may be bound to a resource and still
manage themselves there)."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.errors import InsufficientScope, Unauthorized
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint


def test_an_admin_token_minted_for_another_audience_is_refused(broker: Any, kit: Any) -> None:
    cfg = broker.config
    args: dict[str, Any] = {
        "kind": KIND_ADMIN,
        "iss": cfg.issuer,
        "sub": "admin",
        "iat": int(broker.clock.now()),
        "ttl": 300,
        "scope": ADMIN_SCOPES,
        "client_id": "admin",
    }
    ours = mint(broker.keyring, aud=cfg.audience, **args)[0]
    assert broker.authenticate(kit.bearer(ours), kit.ctx).kind == KIND_ADMIN
    elsewhere = mint(broker.keyring, aud=("https://rs.example/api",), **args)[0]
    # Would fail if: an operator's token made for a resource server were accepted at the
    # broker's own endpoints, where only agent tokens may be audience-bound.
    with pytest.raises(Unauthorized) as refused:
        broker.authenticate(kit.bearer(elsewhere), kit.ctx)
    assert refused.value.reason == "audience mismatch"
    assert refused.value.denial_id


def test_an_operator_token_needs_the_operator_scope_its_route_names(broker: Any, kit: Any) -> None:
    cfg = broker.config
    operator = mint(
        broker.keyring,
        kind=KIND_ADMIN,
        iss=cfg.issuer,
        sub="operator:ops",
        aud=cfg.audience,
        iat=int(broker.clock.now()),
        ttl=300,
        scope=("read:data:*",),
        client_id="admin",
    )[0]
    # Would fail if: an operator's token were let through a route that names a scope
    # for operators' tokens (the revocation feed's) without holding it.
    with pytest.raises(InsufficientScope) as refused:
        broker.authenticate_feed_reader(kit.bearer(operator), kit.ctx)
    assert refused.value.required_scope
    assert refused.value.required_scope != "read:data:*"
