"""Audience-bound tokens (RFC 8707 resource indicators).

The choice and narrowing rules live in :mod:`tasklease.rules.issuance` (the issuance
check is shared with the SDK and the verifier); here, the values' checks, refusing with
the broker's errors.

A token is for one resource. A launch token may name the resources its agent's tokens
may be for; a registration may name one of them; the token then carries that single
resource as its ``aud``, and every resource server's check (``aud`` contains *my*
identifier) refuses it everywhere else. A token that names no resource carries the
broker's default audience: the first configured ``audience`` only, never all of them
(the others are accepted at the broker, for renaming it). Delegation can keep or narrow
the audience, never widen it: a token for the broker's audiences only counts as "not
yet restricted", a single resource as narrower than that. Reaching another resource
takes a new registration or a token exchange.

Values are at most 512 printable ASCII characters without spaces: an RFC 8707
``resource`` is an absolute URI without a fragment (:func:`validate_resource_uri`, at the
edge, section 2: ``invalid_target`` otherwise); an ``audience`` (RFC 8693 section 2.1) is
a logical name or a URI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tasklease.core.errors import InvalidRequest, InvalidTarget
from tasklease.rules.issuance import default_audience

__all__ = [
    "MAX_RESOURCES",
    "check_ceiling",
    "default_audience",
    "validate_ceiling",
    "validate_resource",
    "validate_resource_uri",
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


def validate_resource_uri(value: object, *, field: str = "resource") -> None:
    """RFC 8707 section 2: each ``resource`` value (a string or a list of them) is an
    absolute URI (RFC 3986 section 4.3: a scheme) without a fragment.

    Raises:
        InvalidTarget: a value that is not.
    """
    items = value if isinstance(value, list) else [value]
    for item in items:
        if item is None:
            continue
        if not isinstance(item, str) or not _SCHEME.match(item) or "#" in item:
            raise InvalidTarget(
                f"{field} must be an absolute URI without a fragment (RFC 8707); "
                "a logical name goes in audience"
            )
        validate_resource(item, field=field)


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


def validate_ceiling(value: object, *, field: str, configured: Sequence[str]) -> tuple[str, ...]:
    """The resources a launch token or an attestation policy's rule holds its agents to;
    ``()`` when absent.

    Raises:
        InvalidTarget: a malformed value (:func:`validate_resources`).
        InvalidRequest: it lists the broker's default audience: a token for that may be
            narrowed to any resource later, so as a ceiling it restricts nothing.
    """
    resources = validate_resources(value, field=field)
    check_ceiling(resources, field=field, configured=configured)
    return resources


def check_ceiling(resources: Sequence[str], *, field: str, configured: Sequence[str]) -> None:
    """Refuse a new resource ceiling that lists the broker's default audience (see
    :func:`validate_ceiling`). One already stored is read as it is: registration under
    it never hands that audience out (:func:`tasklease.rules.issuance.choose_audience`).

    Raises:
        InvalidRequest: it does.
    """
    default = default_audience(configured)[0]
    if default in resources:
        raise InvalidRequest(
            f"{field} {default} is the broker's default audience, which restricts nothing",
            hint="name the resource servers the agents' tokens are for, or leave it out",
        )
