"""The one exception tree of tasklease.

Every error has a short machine ``code`` (stable, part of the wire contract as the
problem ``error_code``), a ``detail`` that is safe to show to the caller, an optional
``hint`` and an internal ``reason`` that is only ever written to the audit log and debug
logs. The core never knows HTTP status codes: ``tasklease.http.problems`` maps codes to
statuses. A refusal of a presented access token also names its ``challenge``: the
authentication scheme and the OAuth error code (RFC 6750 section 3.1, RFC 9449 sections
7.1 and 9) the ``WWW-Authenticate`` answer carries.

    TaskleaseError
    ├── InvalidRequest          invalid_request      malformed or missing input
    │   ├── InvalidTTL          invalid_ttl          a TTL outside its allowed range
    │   ├── InvalidTarget       invalid_target       an unusable resource/audience (RFC 8707)
    │   ├── InvalidDPoPProof    invalid_dpop_proof   a DPoP proof refused at issuance (RFC 9449)
    │   ├── UseDPoPNonce        use_dpop_nonce       a DPoP proof without the nonce we ask for
    │   ├── InvalidScope        invalid_scope        a token request's scope beyond its grant
    │   └── UnsupportedGrantType unsupported_grant_type  a grant the token endpoint lacks
    ├── Unauthorized            unauthorized         no valid credential
    ├── Forbidden               forbidden            authenticated, but not allowed
    │   ├── InsufficientScope   insufficient_scope   the bearer lacks a route's scope
    │   ├── ScopeViolation      scope_violation      a request would widen authority
    │   ├── RenewalCountExceeded  renewal_count_exceeded
    │   └── RenewalCeilingExceeded renewal_ceiling_exceeded
    ├── NotFound                not_found
    ├── Conflict                conflict
    ├── RateLimited             rate_limited
    ├── Unavailable             service_unavailable  fail-closed: state could not be made durable
    └── InternalError           internal_error
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "INSUFFICIENT_SCOPE",
    "INVALID_REQUEST",
    "INVALID_TOKEN",
    "Conflict",
    "FailureRun",
    "Forbidden",
    "InsufficientScope",
    "InternalError",
    "InvalidAuthorizationDetails",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTTL",
    "InvalidTarget",
    "NotFound",
    "RateLimited",
    "RenewalCeilingExceeded",
    "RenewalCountExceeded",
    "ScopeViolation",
    "TaskleaseError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedGrantType",
    "UseDPoPNonce",
    "failure_run",
    "failure_summary",
]

INVALID_TOKEN = ("Bearer", "invalid_token")
"""The challenge of a presented bearer token that failed (RFC 6750 section 3.1)."""
INVALID_REQUEST = ("Bearer", "invalid_request")
"""The challenge of a malformed ``Authorization`` header (RFC 6750 section 3.1)."""
INSUFFICIENT_SCOPE = ("Bearer", "insufficient_scope")
"""The challenge of a valid token without the authority asked for (RFC 6750 section 3.1)."""


class TaskleaseError(Exception):
    """Root of every error tasklease raises on purpose.

    ``detail`` is shown to callers; ``reason`` never is (it goes to the audit log).
    ``denial_id`` is set by the broker when it audits a refusal: the caller sees the id,
    the audit event with the same ``denial=<id>`` holds the precise reason.
    """

    code = "internal_error"
    default_detail = "internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        reason: str | None = None,
        hint: str | None = None,
        retry_after: int | None = None,
        challenge: tuple[str, str] | None = None,
        required_scope: str | None = None,
        oauth_error: str | None = None,
        dpop_nonce: str | None = None,
    ) -> None:
        self.detail = detail if detail is not None else self.default_detail
        self.reason = reason if reason is not None else self.detail
        self.hint = hint
        self.retry_after = retry_after
        self.denial_id: str | None = None
        # (scheme, error code) for WWW-Authenticate: ("Bearer", "invalid_token"),
        # ("DPoP", "invalid_dpop_proof"), ...; None when no token was presented.
        self.challenge = challenge
        self.required_scope = required_scope
        # The RFC 6749 section 5.2 ``error`` of the answer, where the code implies none.
        self.oauth_error = oauth_error
        # A fresh DPoP nonce for the client to retry with (RFC 9449 ``DPoP-Nonce``).
        self.dpop_nonce = dpop_nonce
        super().__init__(self.detail)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


class InvalidRequest(TaskleaseError):
    code = "invalid_request"
    default_detail = "invalid request"


class InvalidTTL(InvalidRequest):
    code = "invalid_ttl"
    default_detail = "invalid TTL"


class InvalidTarget(InvalidRequest):
    code = "invalid_target"
    default_detail = "the requested resource is invalid or not allowed"


class InvalidDPoPProof(InvalidRequest):
    code = "invalid_dpop_proof"
    default_detail = "invalid DPoP proof"


class UseDPoPNonce(InvalidRequest):
    code = "use_dpop_nonce"
    default_detail = "the DPoP proof must carry the nonce in the DPoP-Nonce header"


class InvalidScope(InvalidRequest):
    """A token request's ``scope`` beyond what can be granted (RFC 6749 section 5.2)."""

    code = "invalid_scope"
    default_detail = "the requested scope is invalid or exceeds what can be granted"


class InvalidAuthorizationDetails(InvalidRequest):
    """``authorization_details`` with an unknown type, unknown or malformed members, or
    one its type's schema refuses (RFC 9396 section 5)."""

    code = "invalid_authorization_details"
    default_detail = "invalid authorization_details"


class UnsupportedGrantType(InvalidRequest):
    """A token request's ``grant_type`` the token endpoint does not serve (RFC 6749 5.2)."""

    code = "unsupported_grant_type"
    default_detail = "unsupported grant_type"


class Unauthorized(TaskleaseError):
    code = "unauthorized"
    default_detail = "unauthorized"


class Forbidden(TaskleaseError):
    code = "forbidden"
    default_detail = "forbidden"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"
    default_detail = "token lacks required scope"


class ScopeViolation(Forbidden):
    code = "scope_violation"
    default_detail = "requested scope exceeds allowed scope"


class RenewalCountExceeded(Forbidden):
    code = "renewal_count_exceeded"
    default_detail = "token has reached its maximum number of renewals"


class RenewalCeilingExceeded(Forbidden):
    code = "renewal_ceiling_exceeded"
    default_detail = "token has reached its maximum lifetime since registration"


class NotFound(TaskleaseError):
    code = "not_found"
    default_detail = "not found"


class Conflict(TaskleaseError):
    code = "conflict"
    default_detail = "conflict"


class RateLimited(TaskleaseError):
    code = "rate_limited"
    default_detail = "rate limit exceeded, try again later"


class Unavailable(TaskleaseError):
    code = "service_unavailable"
    default_detail = "service temporarily unavailable"


class InternalError(TaskleaseError):
    code = "internal_error"
    default_detail = "internal error"


def failure_summary(exc: BaseException) -> str:
    """What a log line says about a failure that repeats (a write batch, a background
    job): our own words for :class:`Unavailable` (no data in them), only the type of
    anything else (a driver's message may quote a value)."""
    if isinstance(exc, Unavailable):
        return exc.detail
    return type(exc).__name__


@dataclass(frozen=True, slots=True)
class FailureRun:
    """A run of failures of something that repeats (a write batch, a background job),
    from its first failure to the next success.

    ``summary`` is the latest failure's cause (:func:`failure_summary`), ``causes`` every
    cause the run has had; ``since`` and ``last`` are monotonic times of its first and
    latest failure, ``rounds`` how many failed.
    """

    summary: str
    since: float
    last: float
    rounds: int = 1
    causes: frozenset[str] = frozenset()


def failure_run(
    previous: FailureRun | None, exc: BaseException, now: float
) -> tuple[FailureRun, bool]:
    """The run ``previous`` (None: none under way) after one more failure, ``exc`` at
    ``now``, and whether to log this failure: the first of a run, or a cause the run has
    not had. One outage can alternate between causes (PostgreSQL stopped: a connection
    attempt that timed out, then a second in which calls fail at once); a cause already
    logged is not logged again, and the run goes on from its first failure."""
    summary = failure_summary(exc)
    if previous is None:
        return FailureRun(summary, now, now, 1, frozenset({summary})), True
    new = summary not in previous.causes
    run = FailureRun(summary, previous.since, now, previous.rounds + 1, previous.causes | {summary})
    return run, new
