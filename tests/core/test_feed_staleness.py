"""Exchanges of a federated domain's tokens wait for its revocation feed (core.peerfeed):
once the feed has been silent longer than ``federation_feed_max_staleness``, a revocation
made there could have been missed, and its tokens are refused until the feed is current
again."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import Unavailable
from tasklease.core.keys import KeyRing
from tasklease.core.store import AuditQuery

from .conftest import NONCE_SECRET
from .test_exchange import START, A, B, bundle_of, exchange, for_domain

BOUND = 60.0


def _pair(make_broker: Any, kit: Any, *, feed: bool = True, **config: Any) -> tuple[Any, ...]:
    """A and B on one clock; B federates A (with A's feed when ``feed``). Returns B, the
    token A's agent made for B, B's actor token, and the clock."""
    clock = ManualClock(START)
    a = make_broker(clock=clock, trust_domain=A, keyring=KeyRing.generate())
    b = make_broker(clock=clock, trust_domain=B, keyring=KeyRing.generate(), **config)
    extra = {"revocation_feed": "https://a.example", "feed_credentials_file": "a.json"}
    b.federation.add(
        kit.admin(b).claims,
        trust_domain=A,
        bundle=bundle_of(a),
        scope_map=[["read:data:*", "read:data:*"]],
        max_ttl=120,
        ctx=kit.ctx,
        **(extra if feed else {}),
    )
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    return b, for_domain(a, kit, alice.token, B), bob.token, clock


def _refused(b: Broker, kit: Any, subject: str, actor: str) -> str:
    with pytest.raises(Unavailable) as info:
        exchange(b, kit, subject, actor)
    error = info.value
    assert error.retry_after and error.denial_id and error.denial_id.startswith("den_")
    events, _ = b.store.query_audit(AuditQuery(limit=10_000))
    [event] = [e for e in events if f"denial={error.denial_id}" in e.detail]
    assert event.outcome == "denied"
    return event.detail


def test_a_feed_never_heard_holds_the_domains_tokens(make_broker: Any, kit: Any) -> None:
    b, subject, actor, _ = _pair(make_broker, kit)
    assert "has not been heard current yet" in _refused(b, kit, subject, actor)
    b.federation_feed_heard(A)
    assert exchange(b, kit, subject, actor).token


def test_a_feed_silent_past_the_bound_holds_them_until_heard_again(
    make_broker: Any, kit: Any
) -> None:
    b, subject, actor, clock = _pair(make_broker, kit)
    b.federation_feed_heard(A)
    clock.advance(BOUND)  # at the bound: still current
    assert exchange(b, kit, subject, actor).token
    clock.advance(1)
    detail = _refused(b, kit, subject, actor)
    assert "last heard current 61 s ago (federation_feed_max_staleness 60 s)" in detail
    b.federation_feed_heard(A)
    assert exchange(b, kit, subject, actor).token


def test_the_time_heard_never_goes_back(make_broker: Any, kit: Any) -> None:
    """Two processes' records of the same feed (a follower that lost its lease, the next
    one): the later stays."""
    b, _, _, clock = _pair(make_broker, kit)
    clock.advance(10)
    b.federation_feed_heard(A)
    clock.advance(-5)
    b.federation_feed_heard(A)
    assert b.store.feed_heard(A) == START + 10


@pytest.mark.parametrize("case", ["no_feed", "bound_off"])
def test_without_a_feed_or_with_the_bound_off_nothing_is_held(
    make_broker: Any, kit: Any, case: str
) -> None:
    if case == "no_feed":
        b, subject, actor, clock = _pair(make_broker, kit, feed=False)
    else:
        b, subject, actor, clock = _pair(make_broker, kit, federation_feed_max_staleness=0)
    clock.advance(BOUND + 30)  # past the bound: it would be held if it applied
    assert exchange(b, kit, subject, actor).token


def test_a_follower_whose_clock_jumped_ahead_vouches_for_no_time_to_come(
    make_broker: Any, kit: Any, admin_secret_hash: str
) -> None:
    """The feed's follower is another process (another replica) whose wall clock jumped a
    day ahead (a bad NTP answer). What it records as heard is dated by the time that has
    passed (``Kernel.lease_now``), as its lease is: dated by its wall clock, it told every
    process that the feed was current for a day to come, and the time heard never goes
    back, so a feed that went silent after it was heard did not hold the domain's tokens."""
    b, subject, actor, clock = _pair(make_broker, kit)
    elapsed, wall = ManualClock(START), ManualClock(START)
    follower = Broker(
        Config(admin_secret_hash=admin_secret_hash, trust_domain=B),
        b.store,
        KeyRing.generate(),
        clock=wall,
        monotonic=elapsed.now,
        nonce_secret=NONCE_SECRET,
    )
    wall.advance(86_400)  # the jump
    follower.federation_feed_heard(A)
    assert exchange(b, kit, subject, actor).token  # heard now, by the time that passed
    clock.advance(BOUND + 1)  # silent since
    assert "last heard current 61 s ago" in _refused(b, kit, subject, actor)
