"""By-reference tokens are accepted only where their kind is: the store's record names the
kind, and validation refuses one of another kind as it refuses a JWT's ``typ``."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.errors import Unauthorized
from tasklease.core.introspection import new_reference
from tasklease.core.tokens import KIND_ADMIN
from tasklease.core.validation import TokenRejected


def test_a_by_reference_admin_token_is_not_an_agent_token(broker: Any, kit: Any) -> None:
    admin = kit.admin(broker)
    reference, record = new_reference(admin.claims, clock_skew=broker.config.clock_skew)
    with broker.store.write() as tx:
        tx.insert_reference_token(record)
    # Where operators' tokens are accepted, the reference stands for the admin's claims.
    assert broker.authenticate(kit.bearer(reference), kit.ctx).kind == KIND_ADMIN
    # Would fail if: a by-reference token of another kind passed where only agent tokens
    # are taken (token validation for resource servers, introspection).
    with pytest.raises(TokenRejected) as refused:
        broker.validate(reference)
    assert refused.value.reason == "typ not allowed"
    assert broker.introspect(kit.admin(broker).claims, token=reference, ctx=kit.ctx) == {
        "active": False
    }


def test_a_by_reference_token_still_expires_and_is_revoked(
    broker: Any, kit: Any, clock: Any
) -> None:
    admin = kit.admin(broker)
    reference, record = new_reference(admin.claims, clock_skew=broker.config.clock_skew)
    with broker.store.write() as tx:
        tx.insert_reference_token(record)
    assert broker.authenticate(kit.bearer(reference), kit.ctx).jti == admin.claims.jti
    # Would fail if: the claims a by-reference record stands for skipped the claim rules
    # and the revocation index (the record outlives exp by the clock skew).
    clock.set(admin.claims.exp)
    with pytest.raises(Unauthorized) as expired:
        broker.authenticate(kit.bearer(reference), kit.ctx)
    assert expired.value.reason == "token expired"
    clock.set(admin.claims.iat)
    broker.revoke(kit.admin(broker).claims, level="token", target=admin.claims.jti, ctx=kit.ctx)
    with pytest.raises(Unauthorized) as revoked:
        broker.authenticate(kit.bearer(reference), kit.ctx)
    assert "revoked" in revoked.value.reason
