"""Audience-bound tokens (RFC 8707 resource indicators).

A launch token may name the resources its agent's tokens may be for; a registration may
name one of them; the token then carries that single resource as its ``aud`` instead of
the broker's default audience, and every resource server's check (``aud`` contains *my*
identifier) refuses it everywhere else. Delegation can keep or narrow the audience, never
widen it: the broker's default audience counts as "not yet restricted", a single
resource as narrower than that.

Resource values are absolute URIs without a fragment (RFC 8707 section 2) or plain
identifiers (``mcp-payments``), at most 512 printable ASCII characters without spaces.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tasklease.core.errors import InvalidTarget

__all__ = [
    "MAX_RESOURCES",
    "choose_audience",
    "narrow_audience",
    "validate_resource",
    "validate_resources",
]

MAX_RESOURCES = 16
_RESOURCE = re.compile(r"[!-~]{1,512}")  # printable ASCII, no space
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def validate_resource(value: object, *, field: str) -> str | None:
    """One resource or audience value, or ``None`` when absent.

    Raises:
        InvalidTarget: not a string, empty, too long, with spaces or control characters,
            or a URI with a fragment (RFC 8707 section 2).
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or _RESOURCE.fullmatch(value) is None:
        raise InvalidTarget(f"{field} must be an absolute URI or an identifier")
    if _SCHEME.match(value) and "#" in value:
        raise InvalidTarget(f"{field} must not contain a fragment")
    return value


def validate_resources(value: object, *, field: str) -> tuple[str, ...]:
    """A list of resources (or one string) for a launch token; ``()`` when absent."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > MAX_RESOURCES:
        raise InvalidTarget(f"{field} must be a string or a list of at most {MAX_RESOURCES}")
    out: list[str] = []
    for item in items:
        resource = validate_resource(item, field=field)
        if resource is not None and resource not in out:
            out.append(resource)
    return tuple(out)


def choose_audience(
    requested: str | None, allowed: Sequence[str], default: tuple[str, ...]
) -> tuple[str, ...]:
    """The ``aud`` of a registration's first token.

    Without a resource ceiling on the launch token, a named resource is taken as is and
    no resource means the broker's default audience. With one, the resource must be in
    it; a registration that names none gets the only allowed resource, and must choose
    when there are several (a token names a single resource).

    Raises:
        InvalidTarget: the resource is outside the launch token's, or ambiguous.
    """
    if not allowed:
        return (requested,) if requested is not None else default
    if requested is None:
        if len(allowed) == 1:
            return (allowed[0],)
        raise InvalidTarget("the launch token names several resources: choose one (resource)")
    if requested not in allowed:
        raise InvalidTarget("resource is not among the launch token's resources")
    return (requested,)


def narrow_audience(
    requested: str | None, current: tuple[str, ...], default: tuple[str, ...]
) -> tuple[str, ...]:
    """The ``aud`` of a delegated token: the delegator's, or a narrower one.

    Raises:
        InvalidTarget: the requested resource would widen the audience.
    """
    if requested is None or current == (requested,):
        return current
    if tuple(current) == tuple(default) or requested in current:
        return (requested,)
    raise InvalidTarget("a delegated token's audience can only narrow the delegator's")
