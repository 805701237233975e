"""How fresh the revocation state must be for a token to be accepted: the outage policy.

While the broker is away, a verifier keeps verifying from its cached keys and the last
state of the revocation feed, but only for a bounded *staleness*: the seconds since the
feed last proved current (an entry, the ``sync`` event, or a ``: keepalive`` comment the
broker sends every 2 s on a current stream). Past the bound every verification fails
closed with :class:`~tasklease.verify.RevocationStateStale` (HTTP 503, ``error_code``
``revocation_state_stale``), which says how stale the state is and what the bound is.

Tokens are *critical* when one of their scopes, in the ``scope`` claim or in a ``scope``
grant of ``authorization_details`` (a limited scope travels only there), overlaps a
pattern of ``critical_scopes`` (either covers the other: the broker's own rule,
``rules.grants.holds_critical_scope``), or one of their structured grants (RFC 9396) has
a type in ``critical_grant_types``. A critical token is held to ``critical_staleness`` (0
by default): with 0, it is accepted only while the feed is *live* (the stream connected,
synced and heard from within ``liveness`` seconds), so the moment the stream drops,
critical tokens are refused.

The staleness is exposed as a metric (:func:`prometheus_text`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from tasklease import forksafe
from tasklease.rules import grants as grant_rules
from tasklease.rules import scopes as scope_rules
from tasklease.verify._claims import VerifiedToken
from tasklease.verify._errors import InvalidToken, RevocationStateStale

__all__ = ["DEFAULT_LIVENESS", "DEFAULT_MAX_STALENESS", "FeedState", "FreshnessPolicy"]

DEFAULT_MAX_STALENESS = 60.0
"""Seconds an ordinary token is verified on revocation state not heard from since."""
DEFAULT_LIVENESS = 5.0
"""Seconds without a byte after which a connected stream no longer counts as live (the
broker's keepalive comes every 2 s: two may be lost)."""


class FeedState(Protocol):
    """What the policy reads from the feed follower."""

    def staleness(self) -> float: ...

    def live(self, within: float) -> bool: ...


class FreshnessPolicy:
    """The staleness bound of each token, and the refusals once it is passed. Thread-safe."""

    def __init__(
        self,
        *,
        max_staleness: float = DEFAULT_MAX_STALENESS,
        critical_staleness: float = 0.0,
        critical_scopes: Sequence[str] = (),
        critical_grant_types: Iterable[str] = (),
        liveness: float = DEFAULT_LIVENESS,
    ) -> None:
        for name, value in (
            ("max_feed_staleness", max_staleness),
            ("critical_feed_staleness", critical_staleness),
            ("feed_liveness", liveness),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds, at least 0")
        if critical_staleness > max_staleness:
            raise ValueError("critical_feed_staleness must not exceed max_feed_staleness")
        self.max_staleness = max_staleness
        self.critical_staleness = critical_staleness
        self.critical_scopes = scope_rules.check_scope_patterns("critical_scopes", critical_scopes)
        self.critical_grant_types = frozenset(critical_grant_types)
        self.liveness = liveness
        # Below this staleness no token is refused (the hot path: one comparison).
        self._fast_bound = (
            critical_staleness
            if self.critical_scopes or self.critical_grant_types
            else max_staleness
        )
        self._lock = threading.Lock()
        forksafe.track(self)
        self.refusals = 0
        self.critical_refusals = 0

    def is_critical(self, token: VerifiedToken) -> bool:
        """True when ``token`` holds a critical scope (in its ``scope`` claim or as a
        ``scope`` grant, whether or not ``scope`` is a critical grant type) or a grant of
        a critical type."""
        details: tuple[Mapping[str, Any], ...] = ()
        if "authorization_details" in token.claims and (
            self.critical_scopes or self.critical_grant_types
        ):
            try:
                details = token.authorization_details
            except InvalidToken:
                return True  # unreadable grants: hold the token to the strictest bound
        if grant_rules.holds_critical_scope(token.scope, details, self.critical_scopes):
            return True
        return any(detail.get("type") in self.critical_grant_types for detail in details)

    def check(self, token: VerifiedToken, feed: FeedState | None) -> None:
        """Raise :class:`RevocationStateStale` unless ``feed`` is fresh enough for ``token``.

        Without a feed (``feed=False``) there is no revocation state to be stale.
        """
        if feed is None:
            return
        staleness = feed.staleness()
        if staleness <= self._fast_bound:
            return  # fresh enough for any token
        self._check_slow(token, feed, staleness)

    def _check_slow(self, token: VerifiedToken, feed: FeedState, staleness: float) -> None:
        live = self.critical_staleness == 0 and feed.live(self.liveness)
        if live and staleness <= self.max_staleness:
            return  # a live feed is fresh enough for every token: no need to classify it
        critical = self.is_critical(token)
        if critical:
            if live:
                return
            bound = self.critical_staleness
        else:
            bound = self.max_staleness
            if staleness <= bound:
                return
        with self._lock:
            self.refusals += 1
            self.critical_refusals += critical
        raise RevocationStateStale(staleness, bound, critical=critical)

    def check_any(self, feed: FeedState | None) -> None:
        """The ordinary bound, for a decision made before a token is known (introspection)."""
        if feed is None:
            return
        staleness = feed.staleness()
        if staleness > self.max_staleness:
            with self._lock:
                self.refusals += 1
            raise RevocationStateStale(staleness, self.max_staleness, critical=False)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def prometheus_text(
    *,
    audience: str,
    staleness: float,
    live: bool,
    policy: FreshnessPolicy,
    connections: int,
    revocation_entries: int,
    jwks_age: float,
    jwks_max_stale: float,
    clock_offset: float | None = None,
) -> str:
    """The verifier's freshness metrics, its revocation feed's and its key set's, in the
    Prometheus text exposition format (0.0.4)."""
    labels = f'{{audience="{_label(audience)}"}}'
    rows = (
        (
            "tasklease_verifier_feed_staleness_seconds",
            "gauge",
            "Seconds since the revocation feed last proved current (+Inf before the first sync).",
            staleness,
        ),
        (
            "tasklease_verifier_feed_live",
            "gauge",
            "1 while the revocation stream is connected, synced and heard from recently.",
            1.0 if live else 0.0,
        ),
        (
            "tasklease_verifier_max_feed_staleness_seconds",
            "gauge",
            "The staleness bound of ordinary tokens.",
            policy.max_staleness,
        ),
        (
            "tasklease_verifier_critical_feed_staleness_seconds",
            "gauge",
            "The staleness bound of critical tokens (0: only while the feed is live).",
            policy.critical_staleness,
        ),
        (
            "tasklease_verifier_stale_refusals_total",
            "counter",
            "Verifications refused because the revocation state was too stale.",
            float(policy.refusals),
        ),
        (
            "tasklease_verifier_feed_connections_total",
            "counter",
            "Connections made to the revocation stream.",
            float(connections),
        ),
        (
            "tasklease_verifier_revocation_entries",
            "gauge",
            "Revocation entries held.",
            float(revocation_entries),
        ),
        (
            "tasklease_verifier_jwks_age_seconds",
            "gauge",
            "Seconds since the broker's JWKS was last fetched (+Inf before the first fetch).",
            jwks_age,
        ),
        (
            "tasklease_verifier_jwks_max_stale_seconds",
            "gauge",
            "The key set's age bound: past it every verification is refused.",
            jwks_max_stale,
        ),
        (
            "tasklease_verifier_clock_offset_seconds",
            "gauge",
            "This host's clock minus the broker's, read from its JWKS answers (NaN before).",
            math.nan if clock_offset is None else clock_offset,
        ),
    )
    lines: list[str] = []
    for name, kind, help_text, value in rows:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines.append(f"{name}{labels} {_number(value)}")
    return "\n".join(lines) + "\n"
