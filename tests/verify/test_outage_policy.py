"""The outage policy of tasklease.verify (verify._freshness): how stale the revocation state
may be for ordinary and for critical tokens, the refusal that says so, and the metric.

Pure: a feed whose staleness and liveness the test sets. The end-to-end behaviour against a
broker that is stopped and restarted is in tests/verify/test_fleet_outage.py.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import pytest

from tasklease.verify import RevocationStateStale, VerifierUnavailable
from tasklease.verify._claims import parse_claims
from tasklease.verify._freshness import FreshnessPolicy, prometheus_text


class Feed:
    """A feed follower as the policy sees it."""

    def __init__(self, staleness: float, *, connected: bool = True) -> None:
        self.seconds = staleness
        self.connected = connected

    def staleness(self) -> float:
        return self.seconds

    def live(self, within: float) -> bool:
        return self.connected and self.seconds <= within


def token(scope: str = "read:data:1", details: list[dict[str, Any]] | None = None) -> Any:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "tasklease",
        "sub": "spiffe://t/agent/o/t/i",
        "aud": ["svc-a"],
        "exp": now + 60,
        "nbf": now,
        "iat": now,
        "jti": "j" * 32,
        "scope": scope,
        "client_id": "c",
    }
    if details is not None:
        payload["authorization_details"] = details
    return parse_claims(payload)


PAYMENT = {"type": "payment", "actions": ["pay"]}


def policy(**kwargs: Any) -> FreshnessPolicy:
    kwargs.setdefault("critical_scopes", ("write:payments:*",))
    kwargs.setdefault("critical_grant_types", ("payment",))
    return FreshnessPolicy(**kwargs)


def test_the_default_bound_is_60_seconds_and_zero_for_critical_tokens() -> None:
    rules = FreshnessPolicy()
    assert rules.max_staleness == 60.0
    assert rules.critical_staleness == 0.0
    ordinary = token()
    rules.check(ordinary, Feed(59.9, connected=False))  # the broker has been away 59.9 s
    with pytest.raises(RevocationStateStale) as caught:
        rules.check(ordinary, Feed(60.1, connected=False))
    stale = caught.value
    assert isinstance(stale, VerifierUnavailable)  # 503, like every fail-closed refusal
    assert stale.code == "revocation_state_stale"
    assert (stale.staleness, stale.bound, stale.critical) == (60.1, 60.0, False)
    assert str(stale) == stale.message
    assert stale.message == (
        "revocation state is stale: nothing heard from the broker's revocation feed for "
        "60.1 s; the limit is 60 s"
    )
    assert rules.refusals == 1


def test_a_critical_scope_needs_a_live_feed() -> None:
    rules = policy()
    critical = token("read:data:1 write:payments:42")
    assert rules.is_critical(critical)
    rules.check(critical, Feed(1.9))  # connected, beating every 2 s
    with pytest.raises(RevocationStateStale) as caught:
        rules.check(critical, Feed(0.3, connected=False))  # the stream just dropped
    assert caught.value.critical and caught.value.bound == 0
    assert caught.value.message.endswith("critical tokens need a live feed")
    with pytest.raises(RevocationStateStale):
        rules.check(critical, Feed(5.5))  # connected, but silent past the liveness bound
    # The same moments are fine for an ordinary token.
    rules.check(token(), Feed(0.3, connected=False))
    rules.check(token(), Feed(5.5))
    assert (rules.refusals, rules.critical_refusals) == (2, 2)


@pytest.mark.parametrize(
    ("scope", "critical"),
    [
        ("write:payments:42", True),  # covered by the pattern
        ("write:payments:*", True),  # the pattern itself
        ("read:payments:42", False),
        ("write:orders:42", False),
        ("", False),
    ],
)
def test_which_scopes_are_critical(scope: str, critical: bool) -> None:
    assert policy().is_critical(token(scope)) is critical
    # A token whose scope covers a critical pattern can do what it names: critical too.
    assert policy(critical_scopes=("write:payments:eu",)).is_critical(token("write:payments:*"))


def test_a_grant_of_a_critical_type_makes_the_token_critical() -> None:
    rules = policy()
    paying = token("read:data:1", [PAYMENT])
    assert rules.is_critical(paying)
    assert not rules.is_critical(
        token("read:data:1", [{"type": "resource_access", "actions": ["read"]}])
    )
    with pytest.raises(RevocationStateStale):
        rules.check(paying, Feed(0.5, connected=False))
    # Grants that cannot be read hold the token to the strictest bound (parse_claims
    # refuses such a token, as the broker does: this is the policy's own guard).
    readable = token("read:data:1")
    unreadable = {**readable.claims, "authorization_details": [{"no": "type"}, "x"]}
    assert rules.is_critical(dataclasses.replace(readable, claims=unreadable))


@pytest.mark.parametrize("grant_types", [(), ("payment",), ("scope",)])
def test_a_critical_scope_held_as_a_limited_grant_needs_a_live_feed(
    grant_types: tuple[str, ...],
) -> None:
    """A limited scope grant travels only in authorization_details: read by the scope claim
    alone, this token was ordinary and accepted for 60 s with the feed down (unless the
    operator also listed ``scope`` as a critical grant type)."""
    rules = policy(critical_grant_types=grant_types)
    limited = {"type": "scope", "scope": "write:payments:acct-1", "limits": {"max_calls": 3}}
    granted = token("", [limited])
    assert granted.allows("scope", scope="write:payments:acct-1") is not None
    assert rules.is_critical(granted)
    with pytest.raises(RevocationStateStale) as caught:
        rules.check(granted, Feed(20.0, connected=False))
    assert caught.value.critical and caught.value.bound == 0
    assert rules.critical_refusals == 1
    # A scope grant outside the critical patterns is ordinary, unless its type is listed.
    other = token("", [{**limited, "scope": "read:data:1"}])
    assert rules.is_critical(other) is ("scope" in grant_types)


def test_a_positive_critical_bound_is_a_plain_bound() -> None:
    rules = policy(critical_staleness=10.0)
    critical = token("write:payments:1")
    rules.check(critical, Feed(9.0, connected=False))
    with pytest.raises(RevocationStateStale) as caught:
        rules.check(critical, Feed(10.5))
    assert caught.value.message.endswith("the limit is 10 s for critical tokens")


def test_a_live_feed_does_not_stretch_a_positive_critical_bound() -> None:
    """Live means heard from within ``liveness``: with a positive critical bound shorter
    than that, a connected feed is still held to the bound."""
    rules = policy(critical_staleness=1.0, liveness=5.0)
    with pytest.raises(RevocationStateStale) as caught:
        rules.check(token("write:payments:1"), Feed(3.0, connected=True))
    assert caught.value.critical
    rules.check(token(), Feed(3.0, connected=True))  # an ordinary token: within 60 s


def test_a_live_feed_does_not_stretch_the_ordinary_bound() -> None:
    """A liveness window longer than ``max_staleness``: a connected feed heard from within
    it but past the bound still refuses ordinary tokens."""
    rules = policy(max_staleness=3.0, liveness=5.0)
    rules.check(token(), Feed(3.0, connected=True))
    with pytest.raises(RevocationStateStale) as caught:
        rules.check(token(), Feed(4.0, connected=True))
    assert not caught.value.critical


def test_never_synced_and_no_feed() -> None:
    rules = policy()
    with pytest.raises(RevocationStateStale) as caught:
        rules.check(token(), Feed(math.inf, connected=False))
    assert "never heard from the broker's revocation feed" in caught.value.message
    rules.check(token("write:payments:1"), None)  # feed=False: nothing to be stale
    with pytest.raises(RevocationStateStale):
        rules.check_any(Feed(61.0))
    rules.check_any(Feed(59.0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_staleness": -1},
        {"max_staleness": math.nan},
        {"max_staleness": math.inf},
        {"critical_staleness": 61},  # stricter than ordinary tokens, never looser
        {"liveness": -0.1},
        {"critical_scopes": ("payments",)},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must|scope"):
        FreshnessPolicy(**kwargs)


def test_the_staleness_is_a_metric() -> None:
    rules = policy()
    with pytest.raises(RevocationStateStale):
        rules.check(token(), Feed(75.25, connected=False))
    text = prometheus_text(
        audience='svc-"a"',
        staleness=75.25,
        live=False,
        policy=rules,
        connections=3,
        revocation_entries=7,
        jwks_age=12.5,
        jwks_max_stale=3600.0,
    )
    lines = text.splitlines()
    assert 'tasklease_verifier_feed_staleness_seconds{audience="svc-\\"a\\""} 75.25' in lines
    assert "# TYPE tasklease_verifier_feed_staleness_seconds gauge" in lines
    assert 'tasklease_verifier_feed_live{audience="svc-\\"a\\""} 0.0' in lines
    assert 'tasklease_verifier_stale_refusals_total{audience="svc-\\"a\\""} 1.0' in lines
    assert 'tasklease_verifier_jwks_age_seconds{audience="svc-\\"a\\""} 12.5' in lines
    assert 'tasklease_verifier_jwks_max_stale_seconds{audience="svc-\\"a\\""} 3600.0' in lines
    assert 'tasklease_verifier_max_feed_staleness_seconds{audience="svc-\\"a\\""} 60.0' in lines
    never = prometheus_text(
        audience="a",
        staleness=math.inf,
        live=False,
        policy=rules,
        connections=0,
        revocation_entries=0,
        jwks_age=math.inf,
        jwks_max_stale=3600.0,
    )
    assert 'tasklease_verifier_feed_staleness_seconds{audience="a"} +Inf' in never.splitlines()
    assert 'tasklease_verifier_jwks_age_seconds{audience="a"} +Inf' in never.splitlines()
