"""By-reference tokens and the RFC 7662 introspection response.

When a signed token would be larger than ``reference_token_threshold`` (4 KB by default:
long delegation chains, many scopes), the broker hands out an opaque token instead:
``tlr_`` followed by 43 base64url characters (256 random bits). Only its SHA-256 is stored,
with the claims the JWT would have carried; the broker resolves it on every use and
resource servers resolve it through ``POST /v1/introspect``. Opaque tokens therefore
cannot be verified offline, which is the price of keeping every header small.

The response to introspection is the token's claims with ``active: true`` (``scope`` as
a space-separated string, RFC 7662 section 2.2), or exactly ``{"active": false}`` for
anything that is not an active token, whatever the reason (RFC 7662 section 2.2).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from typing import Any

from tasklease.core.records import ReferenceTokenRecord
from tasklease.core.tokens import Claims, ClaimsError, claims_from_payload, token_type_of
from tasklease.rules.messages import reference_hash
from tasklease.rules.secretshapes import REFERENCE

__all__ = [
    "INACTIVE",
    "REFERENCE_PREFIX",
    "claims_from_reference",
    "introspection_response",
    "is_reference_token",
    "new_reference",
    "reference_hash",
]

REFERENCE_PREFIX = "tlr_"
INACTIVE: dict[str, Any] = {"active": False}


def is_reference_token(token: object) -> bool:
    """True for strings shaped like a by-reference token (checked before any lookup)."""
    return isinstance(token, str) and REFERENCE.fullmatch(token) is not None


def new_reference(claims: Claims, *, clock_skew: int) -> tuple[str, ReferenceTokenRecord]:
    """A fresh opaque token standing for ``claims`` and the record to store."""
    token = REFERENCE_PREFIX + secrets.token_urlsafe(32)
    record = ReferenceTokenRecord(
        token_hash=reference_hash(token),
        kind=claims.kind,
        claims=json.dumps(claims.raw, separators=(",", ":"), ensure_ascii=False),
        jti=claims.jti,
        expires_at=float(claims.exp + clock_skew + 1),
    )
    return token, record


def claims_from_reference(record: ReferenceTokenRecord) -> Claims:
    """The typed claims a stored by-reference token stands for (``reference``: its hash).

    Raises:
        ClaimsError: the stored claims are not a well-formed claim set.
    """
    try:
        payload = json.loads(record.claims)
    except ValueError:
        raise ClaimsError("stored claims are not JSON") from None
    if not isinstance(payload, dict):
        raise ClaimsError("stored claims are not an object")
    return replace(claims_from_payload(record.kind, payload), reference=record.token_hash)


def introspection_response(claims: Claims) -> dict[str, Any]:
    """RFC 7662 section 2.2 for an active token: its claims, ``scope`` as a string."""
    body: dict[str, Any] = {"active": True}
    body.update(claims.raw)
    body["scope"] = " ".join(claims.scope)
    body["token_type"] = token_type_of(claims)
    return body
