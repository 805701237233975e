"""Scope grammar and coverage: the one attenuation rule of broker, verifier and SDK.

A scope is ``action:resource:identifier``. The string is split on the first two colons, so
the identifier may itself contain colons (``read:data:customers:42``). No part may be empty.
``*`` is a wildcard only as a *whole identifier* of an *allowed* scope: ``read:data:*``
covers ``read:data:42``; nothing covers more than its own action and resource, and
``*:*:*`` is not a super-scope.

Coverage is the whole of tasklease's authority model, so these functions are pure and
property-tested: no chain of operations built from them can widen authority.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

__all__ = [
    "MAX_SCOPES",
    "MAX_SCOPE_LENGTH",
    "check_scope_patterns",
    "covers",
    "intersect",
    "is_subset",
    "overlaps",
    "parse_scope",
    "uncovered",
]

MAX_SCOPE_LENGTH = 256
MAX_SCOPES = 64
_FORBIDDEN_CHARS = frozenset(" \t\r\n\x00,")


def parse_scope(scope: str) -> tuple[str, str, str] | None:
    """Split a scope into (action, resource, identifier); ``None`` if malformed.

    Malformed: not three non-empty parts, whitespace (any Unicode space), control or
    other non-printable characters, or commas, longer than :data:`MAX_SCOPE_LENGTH`, or a
    ``*`` inside a longer identifier.
    Strings are remembered (a pure function of a short string): coverage parses each
    scope of both sides once per pair, and an offline chain's blocks check the same few.
    Only strings of at most :data:`MAX_SCOPE_LENGTH` characters: a longer one is refused
    at once, and remembering it would let whoever sends one (before any authentication,
    at the token endpoint) keep a copy of up to a request body in memory per entry.
    """
    if type(scope) is str and len(scope) <= MAX_SCOPE_LENGTH:
        return _parse_remembered(scope)
    return _parse(scope)


@functools.lru_cache(maxsize=8192)
def _parse_remembered(scope: str) -> tuple[str, str, str] | None:
    return _parse(scope)


def _parse(scope: str) -> tuple[str, str, str] | None:
    if not scope or len(scope) > MAX_SCOPE_LENGTH:
        return None
    parts = scope.split(":", 2)
    if len(parts) != 3 or not all(parts):
        return None
    # Printable: no control, format (zero-width) or separator character, so no Unicode
    # space that a reader splitting on whitespace (``str.split()``) would read as two
    # scopes; the ASCII ones are forbidden by name.
    if not scope.isprintable() or any(ch in _FORBIDDEN_CHARS for ch in scope):
        return None
    action, resource, identifier = parts
    if "*" in action or "*" in resource:
        return None
    if "*" in identifier and identifier != "*":
        return None
    return action, resource, identifier


def check_scope_patterns(setting: str, patterns: Iterable[object]) -> tuple[str, ...]:
    """``patterns`` as a tuple, each a well-formed scope: the one rule for the patterns
    of ``critical_scopes``, the broker's setting and the verifier's alike.

    A malformed pattern (``write:payments``, ``write:payments:acct-*``) would overlap no
    scope at all (:func:`overlaps` finds nothing that covers it or that it covers), so the
    tokens it was meant to name would silently lose their high assurance.

    Raises:
        ValueError: a pattern that :func:`parse_scope` refuses, named with ``setting``.
    """
    checked: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or parse_scope(pattern) is None:
            raise ValueError(
                f"{setting}: {pattern!r} is not a scope action:resource:identifier "
                "(no spaces; '*' only as the whole identifier, as in write:payments:*)"
            )
        checked.append(pattern)
    return tuple(checked)


def covers(allowed: str, requested: str) -> bool:
    """True iff the single scope ``allowed`` covers ``requested``."""
    a = parse_scope(allowed)
    r = parse_scope(requested)
    if a is None or r is None:
        return False
    if a[0] != r[0] or a[1] != r[1]:
        return False
    return a[2] == "*" or a[2] == r[2]


def overlaps(scopes: Iterable[str], patterns: Sequence[str]) -> bool:
    """True iff some scope overlaps some pattern, either covering the other: how a scope
    is found critical (``critical_scopes``, broker and verifier alike), applied to every
    scope a token holds by ``rules.grants.holds_critical_scope``."""
    if not patterns:
        return False
    return any(covers(p, s) or covers(s, p) for s in scopes for p in patterns)


def uncovered(requested: Iterable[str], allowed: Sequence[str]) -> list[str]:
    """The requested scopes that no allowed scope covers (empty list: all covered)."""
    return [r for r in requested if not any(covers(a, r) for a in allowed)]


def is_subset(requested: Iterable[str], allowed: Sequence[str]) -> bool:
    """True iff every requested scope is covered by at least one allowed scope."""
    return not uncovered(requested, allowed)


def intersect(first: Sequence[str], second: Sequence[str]) -> tuple[str, ...]:
    """The scopes both lists cover: for every pair of the same action and resource, the
    narrower one (a ``*`` identifier yields the other's).

    ``is_subset(r, intersect(a, b))`` holds exactly when ``is_subset(r, a)`` and
    ``is_subset(r, b)`` both do: a credential with two ceilings (a launch token and an
    attestation policy, say) is bounded by this one list. Malformed scopes are dropped.
    """
    out: dict[str, None] = {}
    for a in first:
        pa = parse_scope(a)
        if pa is None:
            continue
        for b in second:
            pb = parse_scope(b)
            if pb is None or pa[:2] != pb[:2]:
                continue
            if pa[2] == "*":
                out[b] = None
            elif pb[2] == "*" or pa[2] == pb[2]:
                out[a] = None
    return tuple(out)
