"""The SDK's exceptions: one root, one class per broker error code.

The broker answers every failure with an RFC 9457 problem whose ``error_code`` is a
stable machine code; :func:`error_from_response` turns such a response into the matching
exception, keeping the code, status, detail, hint and request id. Network failures (no
answer at all) raise :class:`TransportError`.

    TaskleaseError                 any failure the SDK reports
    ├── InvalidRequest             invalid_request (also unsupported_media_type, ...)
    │   ├── InvalidTTL             invalid_ttl
    │   ├── InvalidScope           invalid_scope (token endpoint, RFC 6749 section 5.2)
    │   ├── InvalidTarget          invalid_target (RFC 8707)
    │   ├── UnsupportedGrantType   unsupported_grant_type
    │   ├── InvalidDPoPProof       invalid_dpop_proof (RFC 9449)
    │   ├── UseDPoPNonce           use_dpop_nonce (RFC 9449 section 8)
    │   └── PayloadTooLarge        payload_too_large
    ├── Unauthorized               unauthorized
    │   ├── InvalidClient          unauthorized with OAuth error invalid_client
    │   └── CredentialExpired      the token reached its exp unrenewed (broker away, or
    │                              the agent unused for longer than its token lives)
    ├── Forbidden                  forbidden
    │   ├── InsufficientScope      insufficient_scope
    │   ├── ScopeViolation         scope_violation
    │   └── RenewalLimitReached    the token can no longer be renewed
    │       ├── RenewalCountExceeded    renewal_count_exceeded
    │       └── RenewalCeilingExceeded  renewal_ceiling_exceeded
    ├── NotFound                   not_found
    ├── MethodNotAllowed           method_not_allowed
    ├── Conflict                   conflict
    ├── RateLimited                rate_limited (``retry_after`` seconds)
    ├── Unavailable                service_unavailable
    ├── InternalError              internal_error and other 5xx answers
    ├── TransportError             the broker could not be reached
    ├── InsecureHTTP               insecure_http: the SDK would send a credential (or
    │                              fetch what decides where its tokens go) over plain
    │                              HTTP beyond loopback without an opt-in; nothing sent
    └── ClientClosed               client_closed: the client (or the HTTP connections it
                                   uses) was closed; nothing sent

``TaskleaseError``, ``Forbidden`` and ``InsufficientScope`` are defined in
:mod:`tasklease.rules.errors`: ``InsufficientScope`` is also the verifier's
(``tasklease.verify.InsufficientScope`` is the same class, a ``VerificationError`` too).
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from tasklease.bounds import json_document
from tasklease.client._retry import retry_after_seconds
from tasklease.rules.errors import Forbidden, InsufficientScope, TaskleaseError

__all__ = [
    "ClientClosed",
    "Conflict",
    "CredentialExpired",
    "Forbidden",
    "InsecureHTTP",
    "InsufficientScope",
    "InternalError",
    "InvalidClient",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTTL",
    "InvalidTarget",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RenewalCeilingExceeded",
    "RenewalCountExceeded",
    "RenewalLimitReached",
    "ScopeViolation",
    "TaskleaseError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedGrantType",
    "UseDPoPNonce",
    "error_from_response",
]


class InvalidRequest(TaskleaseError):
    """The broker refused the request as malformed (``invalid_request``, 400; also
    ``unsupported_media_type``): a field, a scope's format, the body. Nothing changed."""

    code = "invalid_request"


class InvalidTTL(InvalidRequest):
    """A requested lifetime is out of bounds (``invalid_ttl``, 400)."""

    code = "invalid_ttl"


class InvalidScope(InvalidRequest):
    """The token endpoint refused the scope asked for (``invalid_scope``, RFC 6749
    section 5.2), or a scope an operation names is not within the caller's."""

    code = "invalid_scope"


class InvalidTarget(InvalidRequest):
    """The resource asked for is malformed or not one the token may be for
    (``invalid_target``, RFC 8707)."""

    code = "invalid_target"


class UnsupportedGrantType(InvalidRequest):
    """The token endpoint does not offer that ``grant_type``
    (``unsupported_grant_type``)."""

    code = "unsupported_grant_type"


class InvalidDPoPProof(InvalidRequest):
    """A DPoP proof was refused (``invalid_dpop_proof``, RFC 9449): missing,
    malformed, replayed, or signed by another key than the token's."""

    code = "invalid_dpop_proof"


class UseDPoPNonce(InvalidRequest):
    """The broker asks for its DPoP nonce in the proof (``use_dpop_nonce``, RFC 9449
    section 8); the SDK sends the request once more with it, and raises this only when
    that is refused too."""

    code = "use_dpop_nonce"


class PayloadTooLarge(InvalidRequest):
    """The request body is over the broker's limit (``payload_too_large``, 413)."""

    code = "payload_too_large"


class Unauthorized(TaskleaseError):
    """The credential presented was refused (``unauthorized``, 401): unknown,
    expired, revoked, released or consumed (a launch token), or a proof that failed.
    ``denial_id`` names the audit event with the precise reason."""

    code = "unauthorized"


class CredentialExpired(Unauthorized):
    """The agent's token reached its ``exp`` before it was renewed: while the broker could
    not be reached, or while the agent went unused (renewal comes with use: ``auth``,
    ``ensure_fresh``). Raised by the SDK itself, with nothing sent: a token is dead at
    its ``exp``. Resume with the registered key (``Agent.resume``) or register again."""

    code = "credential_expired"


class InvalidClient(Unauthorized):
    """The token endpoint did not authenticate the app (wrong or missing credentials)."""

    code = "unauthorized"


class ScopeViolation(Forbidden):
    """A scope (or grant) asked for is wider than allowed (``scope_violation``,
    403): beyond the launch token's ceiling at registration, the delegator's at
    delegation, or the chain at its maximum depth."""

    code = "scope_violation"


class RenewalLimitReached(Forbidden):
    """The token cannot be renewed any more: register a new agent instance.

    Raised as one of its two subclasses, which say which limit was hit.
    """

    code = "renewal_limit_reached"


class RenewalCountExceeded(RenewalLimitReached):
    """The registration has used up its renewals (``max_renewals``;
    ``renewal_count_exceeded``)."""

    code = "renewal_count_exceeded"


class RenewalCeilingExceeded(RenewalLimitReached):
    """The registration is older than ``renewal_ceiling``
    (``renewal_ceiling_exceeded``)."""

    code = "renewal_ceiling_exceeded"


class NotFound(TaskleaseError):
    """What the request names does not exist, or is not the caller's to see
    (``not_found``, 404): an agent to delegate to, an app, a task."""

    code = "not_found"


class MethodNotAllowed(TaskleaseError):
    """The route does not take this HTTP method (``method_not_allowed``, 405)."""

    code = "method_not_allowed"


class Conflict(TaskleaseError):
    """The request conflicts with the broker's state (``conflict``, 409): a name
    taken, an app deregistered."""

    code = "conflict"


class RateLimited(TaskleaseError):
    """Too many attempts; ``retry_after`` is the broker's ``Retry-After`` in seconds."""

    code = "rate_limited"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None, **kw: Any):
        super().__init__(detail, **kw)
        self.retry_after = retry_after


class Unavailable(TaskleaseError):
    """The broker could not make the operation durable, or is not current yet
    (``service_unavailable``, 503): it changed nothing. Retried first (:class:`Retry`)."""

    code = "service_unavailable"


class InternalError(TaskleaseError):
    """The broker failed (``internal_error``, or any other 5xx answer)."""

    code = "internal_error"


class TransportError(TaskleaseError):
    """The broker could not be reached (connection refused, timeout, TLS failure...)."""

    code = "transport_error"


class InsecureHTTP(TaskleaseError):
    """Refused by the SDK itself, before anything was sent: the request would carry the
    agent's token (or another credential) over plain HTTP to a host beyond loopback, or
    fetch a resource's metadata, which chooses the servers the agent then trusts, that way
    (``tasklease.rules.cleartext``, decision 151). Use ``https://`` or a loopback host;
    on a network you trust, opt in with ``insecure_http=True`` where the agent (or the
    credential) was made, or ``TASKLEASE_INSECURE_HTTP=1``. Never a broker's answer."""

    code = "insecure_http"


class ClientClosed(TaskleaseError):
    """Refused by the SDK itself, with nothing sent: the client was closed (``close()``,
    ``aclose()``, the end of its ``with`` block), or the HTTP connections it uses were (an
    ``AppClient``'s, which its agents share; an ``httpx`` client passed in as ``client``).
    Make a new one (an agent: ``Agent.resume`` with its key, or register again); the
    credential was not released by closing. Never a broker's answer."""

    code = "client_closed"
    default_detail = "the client is closed: nothing was sent"


_BY_CODE: dict[str, type[TaskleaseError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        InvalidTTL,
        InvalidScope,
        InvalidTarget,
        UnsupportedGrantType,
        InvalidDPoPProof,
        UseDPoPNonce,
        PayloadTooLarge,
        Unauthorized,
        Forbidden,
        InsufficientScope,
        ScopeViolation,
        RenewalCountExceeded,
        RenewalCeilingExceeded,
        NotFound,
        MethodNotAllowed,
        Conflict,
        RateLimited,
        Unavailable,
        InternalError,
    )
}
_BY_STATUS: dict[int, type[TaskleaseError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}


def error_from_response(response: httpx.Response) -> TaskleaseError:
    """The exception for a failed broker response (status >= 400, or a redirect, which
    the SDK does not follow).

    The class comes from the problem body's ``error_code`` when it is one the SDK knows,
    else from the HTTP status; ``code`` is always the broker's own code when it sent one.
    The response body must have been read.
    """
    body: dict[str, Any] = {}
    try:
        parsed = json_document(response.content) if response.content else {}
    except ValueError:
        parsed = {}
    if isinstance(parsed, dict):
        body = parsed
    code = body.get("error_code") if isinstance(body.get("error_code"), str) else None
    status = response.status_code
    oauth_error = body.get("error") if isinstance(body.get("error"), str) else None
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = InternalError if status >= 500 else TaskleaseError
    if oauth_error == "invalid_client" and issubclass(cls, Unauthorized):
        cls = InvalidClient
    detail = body.get("detail") if isinstance(body.get("detail"), str) else None
    if detail is None:
        detail = f"HTTP {status} {response.reason_phrase}".strip()
    hint = body.get("hint") if isinstance(body.get("hint"), str) else None
    request_id = body.get("request_id") if isinstance(body.get("request_id"), str) else None
    request_id = request_id or response.headers.get("x-request-id")
    kwargs: dict[str, Any] = {
        "code": code or (cls.code if cls is not TaskleaseError else f"http_{status}"),
        "status": status,
        "hint": hint,
        "request_id": request_id,
        "denial_id": body.get("denial_id") if isinstance(body.get("denial_id"), str) else None,
        "oauth_error": oauth_error,
    }
    if cls is RateLimited:
        seconds = retry_after_seconds(response.headers.get("retry-after"))
        kwargs["retry_after"] = None if seconds is None else math.ceil(seconds)
    return cls(detail=detail, **kwargs)
