"""Scope lists from requests: checked against the grammar of :mod:`tasklease.rules.scopes`.

The grammar and coverage rules (``parse_scope``, ``covers``, ``uncovered``,
``is_subset``) live in ``tasklease.rules.scopes``, shared with the verifier and the SDK.
What is the broker's own is :func:`validate_scopes`: a request's scope list becomes a tuple or an
:class:`~tasklease.core.errors.InvalidRequest` naming the field; :func:`scope_param` reads the
token endpoint's space-separated ``scope`` the same way.
"""

from __future__ import annotations

from tasklease.core.errors import InvalidRequest
from tasklease.rules.scopes import MAX_SCOPES, parse_scope
from tasklease.rules.secretshapes import holds_credential, holds_secret

__all__ = ["scope_param", "validate_scopes"]


def validate_scopes(scopes: object, *, field: str) -> tuple[str, ...]:
    """Check a scope list from input and return it as a de-duplicated tuple (order kept).

    Raises :class:`InvalidRequest` naming the field and the first malformed scope.
    """
    if not isinstance(scopes, list | tuple) or not scopes:
        raise InvalidRequest(f"{field} must be a non-empty list of scopes")
    if len(scopes) > MAX_SCOPES:
        raise InvalidRequest(f"{field} must not hold more than {MAX_SCOPES} scopes")
    seen: dict[str, None] = {}
    for s in scopes:
        if not isinstance(s, str) or parse_scope(s) is None:
            shown = "<invalid>"
            if isinstance(s, str) and len(s) <= 64 and not (holds_secret(s) or holds_credential(s)):
                shown = s  # named back only when it cannot be a secret pasted by mistake
            raise InvalidRequest(
                f"invalid scope format in {field}: {shown!r}",
                hint="use action:resource:identifier; '*' only as a whole identifier",
            )
        seen[s] = None
    return tuple(seen)


def scope_param(value: object) -> tuple[str, ...] | None:
    """The token endpoint's ``scope`` (space-separated, RFC 6749 section 3.3) as a tuple, or
    ``None`` when absent or empty.

    Raises :class:`InvalidRequest`: not a string, or a malformed scope in it.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest("scope must be a space-separated string of scopes")
    return validate_scopes(value.split(), field="scope")
