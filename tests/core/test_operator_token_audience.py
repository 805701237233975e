"""Operators' and apps' tokens are the broker's own: at its endpoints they must carry one
of its configured audiences (only agent tokens may be bound to a resource and still
manage themselves there)."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.errors import Unauthorized
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
