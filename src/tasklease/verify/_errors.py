"""The verifier's one exception tree.

    VerificationError          root; ``str()`` is generic, ``reason`` is internal
    ├── InvalidToken           no, malformed, forged, expired, revoked or foreign token (401)
    ├── InsufficientScope      a valid token without the scope a route needs (403)
    └── VerifierUnavailable    the verifier cannot vouch for freshness: fail closed (503)
        ├── RevocationStateStale   the revocation state is older than the token's bound
        └── KeySetStale            no JWKS fetch has succeeded for ``jwks_max_stale``

``VerificationError`` and ``InsufficientScope`` are defined in
:mod:`tasklease.rules.errors`: ``InsufficientScope`` is the SDK's too
(``tasklease.client.InsufficientScope`` is the same class, also a ``Forbidden``), so
either name catches the broker's refusal and the verifier's.

Like the broker, the verifier shows one generic message outward; the precise ``reason``
(for example ``"audience mismatch"`` or ``"revoked (level task)"``) is for logs only.
"""

from __future__ import annotations

from tasklease.rules.errors import InsufficientScope, VerificationError

__all__ = [
    "InsufficientScope",
    "InvalidToken",
    "KeySetStale",
    "RevocationStateStale",
    "VerificationError",
    "VerifierUnavailable",
]


class InvalidToken(VerificationError):
    """The token is missing, malformed, forged, expired, revoked or for another audience.

    ``dpop_proof`` is true when the request's DPoP proof failed rather than the token
    (RFC 9449 section 7.1 ``invalid_dpop_proof``).
    """

    def __init__(self, reason: str, *, dpop_proof: bool = False) -> None:
        super().__init__(reason)
        self.dpop_proof = dpop_proof


class VerifierUnavailable(VerificationError):
    """Revocation state is older than the staleness bound (or keys are unknown): fail closed."""

    code = "service_unavailable"
    message = "token verification is temporarily unavailable"


class RevocationStateStale(VerifierUnavailable):
    """The revocation feed has not been heard from for longer than this token's bound.

    ``staleness`` and ``bound`` are seconds; ``critical`` is true when the token was held
    to the bound of critical scopes and grants. Unlike the other refusals, the message
    says what happened (how stale, which bound): it names no token and helps whoever is
    paged for the outage.
    """

    code = "revocation_state_stale"

    def __init__(self, staleness: float, bound: float, *, critical: bool = False) -> None:
        self.staleness = staleness
        self.bound = bound
        self.critical = critical
        heard = (
            "never heard from the broker's revocation feed"
            if staleness == float("inf")
            else f"nothing heard from the broker's revocation feed for {staleness:.1f} s"
        )
        limit = (
            "critical tokens need a live feed"
            if critical and bound == 0
            else f"the limit is {bound:g} s" + (" for critical tokens" if critical else "")
        )
        self.message = f"revocation state is stale: {heard}; {limit}"
        super().__init__(f"revocation state stale ({staleness:.3f} s > {bound:g} s)")


class KeySetStale(VerifierUnavailable):
    """No fetch of the broker's JWKS has succeeded for longer than ``jwks_max_stale``.

    The last good key set may still list a key the broker has since removed (retired, or
    dropped after a compromise); past the bound it vouches for nothing, whatever the
    token. ``age`` and ``bound`` are seconds. Like :class:`RevocationStateStale`, the
    message says what happened (how old, which bound) and names no token.
    """

    code = "key_set_stale"

    def __init__(self, age: float, bound: float) -> None:
        self.age = age
        self.bound = bound
        fetched = (
            "no fetch of the broker's JWKS has succeeded yet"
            if age == float("inf")
            else f"the broker's JWKS was last fetched {age:.1f} s ago"
        )
        self.message = f"signing keys are stale: {fetched}; the limit is {bound:g} s"
        super().__init__(f"key set stale ({age:.3f} s > {bound:g} s)")
