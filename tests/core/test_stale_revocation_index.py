"""Presented tokens are refused, not accepted, while the revocation index cannot be
confirmed current (a store watch gone quiet past ``revocation_staleness_bound``)."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.errors import Unavailable


def test_validate_and_authenticate_fail_closed_past_the_staleness_bound(
    broker: Any, kit: Any
) -> None:
    agent = kit.register(broker)
    now = [1000.0]
    broker._monotonic = lambda: now[0]
    # As a store watch leaves it: confirmed current for the bound after its last check-in.
    broker._current_until = now[0] + 5.0
    assert broker.validate(agent.token).jti == agent.claims.jti
    assert broker.authenticate(kit.bearer(agent.token), kit.ctx).jti == agent.claims.jti

    now[0] += 5.0  # at the bound itself the index still counts as current
    assert broker.validate(agent.token).jti == agent.claims.jti
    assert broker.authenticate(kit.bearer(agent.token), kit.ctx).jti == agent.claims.jti

    now[0] += 0.001  # past it: a revocation from another replica may be unheard
    # Would fail if: either path served a token on a revocation index it could not
    # confirm current (failing open after the watch stopped checking in).
    with pytest.raises(Unavailable) as validating:
        broker.validate(agent.token)
    assert validating.value.code == "service_unavailable"
    with pytest.raises(Unavailable) as authenticating:
        broker.authenticate(kit.bearer(agent.token), kit.ctx)
    assert authenticating.value.code == "service_unavailable"
