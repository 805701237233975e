"""The error body every route shares: an RFC 9457 problem with a stable ``error_code``.

:mod:`tasklease.http.problems` writes the body and maps each code to its status; this
module says what each code means, for the document.
"""

from __future__ import annotations

from typing import Annotated, Final

from msgspec import UNSET, UnsetType

from tasklease.http.problems import STATUS_BY_CODE, TYPE_PREFIX
from tasklease.http.wire._base import Response, doc

__all__ = ["ERROR_CODES", "Problem"]

ERROR_CODES: Final = {
    "invalid_request": "The request is malformed or a required field is missing.",
    "invalid_ttl": "A TTL is outside its allowed range.",
    "invalid_target": "A resource/audience is malformed, not allowed, or would widen the "
    "audience (RFC 8707).",
    "invalid_dpop_proof": "The DPoP proof sent to obtain a token was refused (RFC 9449 section 5).",
    "use_dpop_nonce": "The DPoP proof lacks the nonce the broker asks for: retry with the "
    "`DPoP-Nonce` header's value (RFC 9449 section 8).",
    "invalid_scope": "A token request asks for more scope than can be granted (RFC 6749 "
    "section 5.2).",
    "invalid_authorization_details": "`authorization_details` with an unknown type, unknown "
    "or malformed members, or a grant its type's schema refuses (RFC 9396 section 5).",
    "unsupported_grant_type": "The token endpoint does not serve this `grant_type` (RFC 6749 "
    "section 5.2).",
    "unauthorized": "No valid credential: missing, malformed, invalid, expired or revoked.",
    "forbidden": "Authenticated, but this caller may not do this.",
    "insufficient_scope": "The token is of the wrong kind or lacks the route's scope.",
    "scope_violation": "The request would widen authority beyond what is allowed.",
    "renewal_count_exceeded": "The token has been renewed the maximum number of times.",
    "renewal_ceiling_exceeded": "The token has reached its maximum lifetime since registration.",
    "not_found": "No such resource; also the answer for any path that is not an endpoint.",
    "method_not_allowed": "The path exists but does not take this HTTP method (any route).",
    "request_timeout": "The request's headers or body did not arrive in time "
    "(`http_header_timeout`, `http_body_timeout`); the connection is closed.",
    "conflict": "The resource already exists.",
    "payload_too_large": "The request body exceeds the broker's limit (1 MiB by default).",
    "unsupported_media_type": "Reserved for a refused body media type; not returned today.",
    "rate_limited": "Too many attempts from this client; retry after `Retry-After` seconds.",
    "headers_too_large": "The request line and headers exceed 512 KiB; the connection is closed.",
    "internal_error": "An unexpected failure; details are in the broker's logs.",
    "service_unavailable": "State could not be made durable (fail-closed); retry later.",
}
"""What each error code means, in :data:`~tasklease.http.problems.STATUS_BY_CODE` order."""

_CODES = [{"const": code, "description": ERROR_CODES.get(code, "")} for code in STATUS_BY_CODE]


class Problem(Response):
    """An RFC 9457 problem details object."""

    type: Annotated[
        str, doc(f"`{TYPE_PREFIX}` followed by the error code.", format="uri-reference")
    ]
    title: Annotated[str, doc("The HTTP status phrase.")]
    status: Annotated[int, doc("The HTTP status code.")]
    detail: Annotated[str, doc("What went wrong, safe to show; never the internal reason.")]
    instance: Annotated[str, doc("The request path.")]
    error_code: Annotated[str, doc("The stable machine code.", oneOf=_CODES)]
    request_id: Annotated[str, doc("The request's `X-Request-ID`.")]
    hint: (
        Annotated[str, doc("How to fix the request, when there is advice to give.")] | UnsetType
    ) = UNSET
    error: (
        Annotated[
            str,
            doc(
                "The OAuth error code of the refusal (RFC 6749 section 5.2, RFC 6750 section "
                "3.1, RFC 8707, RFC 9449), when it has one: `invalid_request`, "
                "`invalid_target`, `invalid_token`, `insufficient_scope`, "
                "`invalid_dpop_proof`, `use_dpop_nonce`, `invalid_scope`, "
                "`unsupported_grant_type`."
            ),
        ]
        | UnsetType
    ) = UNSET
    error_description: (
        Annotated[str, doc("With `error`: the same text as `detail`.")] | UnsetType
    ) = UNSET
    denial_id: (
        Annotated[
            str,
            doc(
                "On refusals the broker audited (every 401, 403 and 429 it raises): `den_` "
                "and 16 hex characters, also at the end of the audit event's detail "
                "(`denial=<id>`), which holds the precise reason."
            ),
        ]
        | UnsetType
    ) = UNSET
