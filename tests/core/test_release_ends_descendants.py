"""A holder's release ends its token and every token descended from it: those delegated
from it, and those delegated from any other token of its renewal thread (its grant). The
entries that do so are kept while a worker whose clock lags by ``clock_skew`` could still
accept what they end."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.revocation import RevocationIndex
from tasklease.core.validation import TokenRejected


def _refused(broker: Any, token: str) -> str:
    with pytest.raises(TokenRejected) as refused:
        broker.validate(token)
    return str(refused.value)


def test_releasing_a_first_token_ends_what_was_delegated_from_it(broker: Any, kit: Any) -> None:
    holder = kit.register(broker)
    delegate = kit.register(broker, task_id="task-delegate")
    handed = broker.delegate(
        holder.claims, delegate_to=delegate.sub, scope=["read:data:1"], ttl=60, ctx=kit.ctx
    )
    assert holder.claims.grant_id == holder.claims.jti  # a first token is its own grant
    broker.release(holder.claims, kit.ctx)
    assert "revoked" in _refused(broker, handed.token)


def test_releasing_a_renewal_ends_what_was_delegated_from_an_earlier_token_of_its_grant(
    broker: Any, kit: Any
) -> None:
    holder = kit.register(broker)
    delegate = kit.register(broker, task_id="task-delegate")
    handed = broker.delegate(
        holder.claims, delegate_to=delegate.sub, scope=["read:data:1"], ttl=60, ctx=kit.ctx
    )
    broker.clock.advance(1)
    renewed = broker.renew(holder.claims, kit.ctx)
    assert broker.validate(handed.token).sub == delegate.sub  # the renewal left it alive
    broker.release(renewed.claims, kit.ctx)
    assert "revoked" in _refused(broker, handed.token)


def test_the_entries_outlive_what_they_end_on_a_lagging_clock(make_broker: Any, kit: Any) -> None:
    # Every token here lives the broker's whole max_ttl from the second of the release.
    broker = make_broker(default_ttl=600, max_ttl=600)
    holder = kit.register(broker)
    delegate = kit.register(broker, task_id="task-delegate")
    handed = broker.delegate(
        holder.claims, delegate_to=delegate.sub, scope=["read:data:1"], ttl=600, ctx=kit.ctx
    )
    released_at = int(broker.clock.now())
    assert holder.claims.exp == handed.claims.exp == released_at + 600
    broker.release(holder.claims, kit.ctx)
    skew = broker.config.clock_skew
    for token in (holder.claims, handed.claims):
        # A worker whose clock runs clock_skew behind still reads it as unexpired.
        index = RevocationIndex()
        index.apply(broker.store.load_revocations(token.exp + skew - 0.5))
        assert index.match(token) is not None
