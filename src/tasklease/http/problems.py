"""RFC 9457 problem details: error code -> HTTP status, and the problem body.

The core raises :class:`~tasklease.core.errors.TaskleaseError` with a machine code; this
module is the one place that knows which HTTP status each code means. Bodies follow the
AgentWrit v2 shape (``type title status detail instance error_code request_id`` and an
optional ``hint``) so its SDK parses them unchanged.

What a body quotes of the request (the path as ``instance``, a field's value in
``detail``) is the caller's text: every token or secret in it is replaced by a marker
(``rules.secretshapes.redacted``), so that a credential pasted where a name belongs is
not sent back in an answer that clients, SDKs and gateways log.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec

from tasklease.core.errors import TaskleaseError
from tasklease.rules.binding import www_authenticate
from tasklease.rules.secretshapes import redacted

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "OAUTH_ERRORS",
    "STATUS_BY_CODE",
    "problem_body",
    "problem_response_parts",
    "status_for",
]

STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "invalid_ttl": 400,
    "invalid_target": 400,
    "invalid_dpop_proof": 400,
    "use_dpop_nonce": 400,
    "invalid_scope": 400,
    "invalid_authorization_details": 400,
    "unsupported_grant_type": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "insufficient_scope": 403,
    "scope_violation": 403,
    "renewal_count_exceeded": 403,
    "renewal_ceiling_exceeded": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "conflict": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "headers_too_large": 431,
    "internal_error": 500,
    "service_unavailable": 503,
}
# The OAuth error code (RFC 6749 section 5.2, RFC 6750 section 3.1, RFC 8707, RFC 9449)
# a problem also carries as ``error`` when its condition has one and the refusal names no
# challenge of its own.
OAUTH_ERRORS: dict[str, str] = {
    "invalid_request": "invalid_request",
    "invalid_ttl": "invalid_request",
    "invalid_target": "invalid_target",
    "invalid_dpop_proof": "invalid_dpop_proof",
    "use_dpop_nonce": "use_dpop_nonce",
    "invalid_scope": "invalid_scope",
    "invalid_authorization_details": "invalid_authorization_details",
    "unsupported_grant_type": "unsupported_grant_type",
    "insufficient_scope": "insufficient_scope",
}
TYPE_PREFIX = "urn:tasklease:error:"
DEFAULT_RETRY_AFTER = 1
"""Seconds a 503 tells the caller to wait when the error does not say (``Retry-After``)."""
_encoder = msgspec.json.Encoder()


def status_for(code: str) -> int:
    return STATUS_BY_CODE.get(code, 500)


def problem_body(
    code: str,
    detail: str,
    *,
    instance: str,
    request_id: str,
    hint: str | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    status = status_for(code)
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": redacted(detail),
        "instance": redacted(instance),
        "error_code": code,
        "request_id": request_id,
    }
    if hint:
        body["hint"] = redacted(hint)
    if extra:
        body.update(extra)
    return _encoder.encode(body) + b"\n"


def problem_response_parts(
    exc: TaskleaseError, *, instance: str, request_id: str
) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, extra headers) for an error raised by the core.

    A refusal the broker audited carries its ``denial_id`` (why-denied tracing): the
    audit event whose detail ends ``denial=<id>`` holds the precise reason.
    """
    status = status_for(exc.code)
    headers: dict[str, str] = {}
    if status == 401 or exc.challenge is not None:
        # Every 401 (RFC 9110 section 11.6.1), and every refusal of a presented token,
        # 403 insufficient_scope included (RFC 6750 section 3).
        headers["WWW-Authenticate"] = www_authenticate(exc.challenge, exc.required_scope)
    if exc.dpop_nonce is not None:
        headers["DPoP-Nonce"] = exc.dpop_nonce  # RFC 9449 sections 8 and 9
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    elif status == 503:
        # Every refusal for want of storage or currency is temporary: say when to retry.
        headers["Retry-After"] = str(DEFAULT_RETRY_AFTER)
    extra: dict[str, Any] = {}
    oauth_error = exc.oauth_error
    if oauth_error is None:
        oauth_error = exc.challenge[1] if exc.challenge else OAUTH_ERRORS.get(exc.code)
    if oauth_error is not None:
        # RFC 6749 section 5.2 members, for OAuth clients reading the same body.
        extra["error"] = oauth_error
        extra["error_description"] = redacted(exc.detail)
    if exc.denial_id:
        extra["denial_id"] = exc.denial_id
    body = problem_body(
        exc.code,
        exc.detail,
        instance=instance,
        request_id=request_id,
        hint=exc.hint,
        extra=extra or None,
    )
    return status, body, headers
