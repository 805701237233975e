"""Structured grants (RFC 9396 ``authorization_details``) and how they narrow.

A grant is a JSON object with a ``type``; the type decides its other members (RFC 9396
section 2). RFC 9396 defines no generic subset rule (section 6.1), so each type defines
its own here, as pure functions the broker, the verifier and the SDK share:

``scope``
    ``{"type": "scope", "scope": "action:resource:identifier"}``: a scope of
    ``rules.scopes`` as a grant. Every plain scope a credential holds *is* such a grant
    (:func:`scope_grant`); one covers another as the scope covers the other.
``resource_access``
    ``actions`` (required), ``locations``, ``datatypes``, ``privileges`` (string lists)
    and ``identifier`` (a string), RFC 9396 section 2.2's common fields. A child is
    covered when its actions are a subset, each location is the parent's or below it
    (``https://pay.example/payees/`` covers ``https://pay.example/payees/P``), its
    datatypes and privileges a subset, and its identifier the parent's. A member the
    parent leaves out does not restrict it.
an operator's type
    Registered per tenant with a JSON Schema and a narrowing rule (:class:`TypeRule`):
    each member ``equal``, ``subset``, ``at_most``, ``at_least``, ``prefix`` or ``path``; a
    member the rule does not name must be equal.

Every grant may carry ``limits`` (:func:`parse_limits`): ``max_amount`` with
``currency``, ``max_calls``, a ``not_before``/``not_after`` window (Unix seconds; RFC
3339 accepted on input) and ``allowed_values`` (a named field's permitted values). A
child's limits are at least as tight as its parent's: a smaller or equal amount in the
same currency, no more calls, a window inside the parent's, a subset of values; a limit
the parent sets the child must set too.

Attenuation (:func:`uncovered`): a child grant set is allowed only when every child grant
is covered by some parent grant. Covering is reflexive and transitive for every type, so
no sequence of narrowings widens a grant (tests/rules/test_grants.py).

Resource servers ask ``rules.grantuse.allows`` whether a call (an action on a location, an amount,
values of named fields, at a time) is within a token's grants.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tasklease.rules import scopes as scope_rules

__all__ = [
    "BUILTIN_TYPES",
    "MAX_DETAILS",
    "NARROWING_OPERATORS",
    "Grant",
    "GrantError",
    "TypeRule",
    "canonical",
    "common",
    "covers",
    "details_of",
    "digest",
    "grants_of",
    "holds_critical_scope",
    "is_type_name",
    "location_covers",
    "parse_detail",
    "parse_details",
    "parse_limits",
    "parse_type_rule",
    "plain_scopes",
    "same_json_value",
    "scope_grant",
    "uncovered",
]

Grant = Mapping[str, Any]
"""A checked grant in canonical form (:func:`parse_detail`)."""

BUILTIN_TYPES = ("scope", "resource_access")
MAX_DETAILS = 32
MAX_LIST = 64
MAX_TEXT = 512
MAX_CALLS = 1_000_000_000
# The integers every JSON reader holds exactly (I-JSON, RFC 7493 section 2.2). A grant's
# value past them is refused: a float holds no integer of 400 digits, so a type's schema
# check (``multipleOf``) or a verifier that reads numbers as floats could not compare it.
MAX_EXACT_INT = 2**53 - 1
NARROWING_OPERATORS = ("equal", "subset", "at_most", "at_least", "prefix", "path")

_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:/-]{0,127}")
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_AMOUNT = re.compile(r"\d{1,14}(\.\d{1,4})?")
_RESOURCE_ACCESS = frozenset(
    ("type", "actions", "locations", "datatypes", "privileges", "identifier", "limits")
)
_LIMITS = frozenset(
    ("max_amount", "currency", "max_calls", "not_before", "not_after", "allowed_values")
)
# Locations are compared as text, so text a resource server might read as another place
# is refused: dot segments (also with a path parameter, ``..;x``, which servers that strip
# parameters read as ``..``), encoded dots, slashes and semicolons, backslashes, empty
# segments.
BAD_LOCATION = re.compile(r"(^|/)\.\.?(/|;|$)|%2[eEfF]|%3[bB]|%5[cC]|\\|[?#\s]|[^:/]//")


class GrantError(ValueError):
    """A malformed grant; ``reason`` names the member (safe to show to the caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TypeRule:
    """How an operator's grant type narrows: member name to operator.

    ``equal`` (the same JSON value), ``subset`` (a list whose items are among the
    parent's), ``at_most``/``at_least`` (a number no greater/smaller), ``prefix`` (a string
    starting with the parent's, character by character: ``/data/a`` covers ``/data/ab``),
    ``path`` (the parent's location or one below it, as :func:`location_covers` reads
    them: ``/data/a`` covers ``/data/a/b``, not ``/data/ab`` nor ``/data/a/../b``). A
    member not named must be equal.
    """

    fields: tuple[tuple[str, str], ...] = ()

    def operator(self, name: str) -> str:
        for field, op in self.fields:
            if field == name:
                return op
        return "equal"


# --- parsing ---------------------------------------------------------------------------


def _text(value: object, where: str, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise GrantError(f"{where} must be a string of 1 to {limit} characters")
    if not value.isprintable():
        raise GrantError(f"{where} must not hold control characters")
    return value


def _texts(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > MAX_LIST:
        raise GrantError(f"{where} must be a list of 1 to {MAX_LIST} strings")
    out: dict[str, None] = {}
    for item in value:
        out[_text(item, f"{where}[]")] = None
    return list(out)


def _location(value: str, where: str) -> str:
    if BAD_LOCATION.search(value):
        raise GrantError(
            f"{where} must not hold dot segments, encoded dots or slashes, empty segments, "
            "a query or a fragment"
        )
    return value


def _seconds(value: object, where: str) -> int:
    if type(value) is int and 0 <= value < 2**40:
        return value
    if isinstance(value, str) and 10 <= len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return int(parsed.timestamp())
    raise GrantError(f"{where} must be Unix seconds or an RFC 3339 time with an offset")


def _amount(value: object, where: str) -> str:
    text = str(value) if type(value) is int else value
    if not isinstance(text, str) or not _AMOUNT.fullmatch(text):
        raise GrantError(f"{where} must be a non-negative decimal with at most 4 decimals")
    try:
        number = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise GrantError(f"{where} must be a decimal") from None
    return _decimal_text(number)


def _decimal_text(number: Decimal) -> str:
    return format(number.normalize(), "f")


def parse_limits(raw: object, where: str = "limits") -> dict[str, Any]:
    """A grant's ``limits`` in canonical form. Raises :class:`GrantError`."""
    if not isinstance(raw, dict) or not raw:
        raise GrantError(f"{where} must be a non-empty object")
    unknown = set(raw) - _LIMITS
    if unknown:
        raise GrantError(f"{where} has unknown members: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    if ("max_amount" in raw) != ("currency" in raw):
        raise GrantError(f"{where}.max_amount and {where}.currency go together")
    if "max_amount" in raw:
        out["max_amount"] = _amount(raw["max_amount"], f"{where}.max_amount")
        currency = raw["currency"]
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            raise GrantError(f"{where}.currency must be an ISO 4217 code such as EUR")
        out["currency"] = currency
    if "max_calls" in raw:
        calls = raw["max_calls"]
        if type(calls) is not int or not 1 <= calls <= MAX_CALLS:
            raise GrantError(f"{where}.max_calls must be an integer from 1 to {MAX_CALLS}")
        out["max_calls"] = calls
    for name in ("not_before", "not_after"):
        if name in raw:
            out[name] = _seconds(raw[name], f"{where}.{name}")
    if "not_before" in out and "not_after" in out and out["not_before"] >= out["not_after"]:
        raise GrantError(f"{where}.not_before must be before {where}.not_after")
    if "allowed_values" in raw:
        values = raw["allowed_values"]
        if not isinstance(values, dict) or not values or len(values) > MAX_LIST:
            raise GrantError(f"{where}.allowed_values must be an object of field to values")
        checked: dict[str, list[Any]] = {}
        for name in sorted(values):
            if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
                raise GrantError(f"{where}.allowed_values has a malformed field name")
            checked[name] = _values(values[name], f"{where}.allowed_values.{name}")
        out["allowed_values"] = checked
    return out


def _exact(value: int, where: str) -> int:
    if not -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
        raise GrantError(f"{where} must be an integer from -(2**53 - 1) to 2**53 - 1")
    return value


def _values(value: object, where: str) -> list[Any]:
    if not isinstance(value, list) or not value or len(value) > MAX_LIST:
        raise GrantError(f"{where} must be a list of 1 to {MAX_LIST} strings or integers")
    out: dict[Any, None] = {}
    for item in value:
        if type(item) is int:
            out[_exact(item, f"{where}[]")] = None
        else:
            out[_text(item, f"{where}[]")] = None
    return list(out)


def is_type_name(name: str) -> bool:
    """True iff ``name`` may name a grant type."""
    return _TYPE_NAME.fullmatch(name) is not None


def parse_detail(raw: object, where: str = "authorization_details[]") -> dict[str, Any]:
    """One grant in canonical form: lists without repeats, ``limits`` checked, amounts as
    decimal text, times as Unix seconds. Raises :class:`GrantError`.

    The built-in types are checked member by member; an operator's type only for its
    ``type`` and ``limits`` and JSON values (the broker checks its JSON Schema).
    """
    if not isinstance(raw, dict):
        raise GrantError(f"{where} must be an object")
    kind = raw.get("type")
    if not isinstance(kind, str) or not _TYPE_NAME.fullmatch(kind):
        raise GrantError(f"{where}.type must be a type name")
    out: dict[str, Any] = {"type": kind}
    if kind == "scope":
        unknown = set(raw) - {"type", "scope", "limits"}
        if unknown:
            raise GrantError(f"{where} has unknown members: {', '.join(sorted(unknown))}")
        scope = raw.get("scope")
        if not isinstance(scope, str) or scope_rules.parse_scope(scope) is None:
            raise GrantError(f"{where}.scope must be a scope action:resource:identifier")
        out["scope"] = scope
    elif kind == "resource_access":
        unknown = set(raw) - _RESOURCE_ACCESS
        if unknown:
            raise GrantError(f"{where} has unknown members: {', '.join(sorted(unknown))}")
        if "actions" not in raw:
            raise GrantError(f"{where}.actions is required")
        for name in ("actions", "locations", "datatypes", "privileges"):
            if name in raw:
                out[name] = _texts(raw[name], f"{where}.{name}")
        for location in out.get("locations", ()):
            _location(location, f"{where}.locations[]")
        if "identifier" in raw:
            out["identifier"] = _text(raw["identifier"], f"{where}.identifier")
    else:
        for name, value in raw.items():
            if name in ("type", "limits"):
                continue
            if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
                raise GrantError(f"{where} has a malformed member name")
            out[name] = _json_value(value, f"{where}.{name}", 0)
    if "limits" in raw:
        out["limits"] = parse_limits(raw["limits"], f"{where}.limits")
    return out


def _json_value(value: object, where: str, depth: int) -> Any:
    if depth > 4:
        raise GrantError(f"{where} is nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if type(value) is int:
        return _exact(value, where)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise GrantError(f"{where} must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise GrantError(f"{where} is longer than {MAX_TEXT} characters")
        return value
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise GrantError(f"{where} holds more than {MAX_LIST} items")
        return [_json_value(item, f"{where}[]", depth + 1) for item in value]
    if isinstance(value, dict):
        if len(value) > MAX_LIST or not all(isinstance(k, str) for k in value):
            raise GrantError(f"{where} must be an object of at most {MAX_LIST} members")
        return {k: _json_value(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    raise GrantError(f"{where} is not a JSON value")


def parse_details(raw: object, where: str = "authorization_details") -> tuple[dict[str, Any], ...]:
    """A list of grants, each canonical, without repeats. Raises :class:`GrantError`."""
    if not isinstance(raw, list | tuple):
        raise GrantError(f"{where} must be a list of objects")
    if len(raw) > MAX_DETAILS:
        raise GrantError(f"{where} must not hold more than {MAX_DETAILS} grants")
    out: dict[str, dict[str, Any]] = {}
    for item in raw:
        grant = parse_detail(item, f"{where}[]")
        out.setdefault(canonical(grant), grant)
    return tuple(out.values())


def parse_type_rule(raw: object, where: str = "narrowing") -> TypeRule:
    """An operator's narrowing rule: ``{"<member>": "<operator>", ...}``."""
    if not isinstance(raw, dict) or len(raw) > MAX_LIST:
        raise GrantError(f"{where} must be an object of member name to operator")
    fields = []
    for name in sorted(raw):
        op = raw[name]
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name) or name == "limits":
            raise GrantError(f"{where} has a malformed member name")
        if op not in NARROWING_OPERATORS:
            raise GrantError(f"{where}.{name} must be one of {', '.join(NARROWING_OPERATORS)}")
        fields.append((name, str(op)))
    return TypeRule(tuple(fields))


def details_of(payload: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """The ``authorization_details`` claim of a verified payload (``()`` when absent).

    Raises :class:`GrantError` when it is malformed.
    """
    raw = payload.get("authorization_details")
    if raw is None:
        return ()
    return parse_details(raw)


def canonical(grant: Grant) -> str:
    """The grant as compact JSON with sorted keys: its identity."""
    return json.dumps(grant, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(grant: Grant) -> str:
    """A short stable name of a grant (SHA-256 of :func:`canonical`, 32 hex)."""
    return hashlib.sha256(canonical(grant).encode()).hexdigest()[:32]


def scope_grant(scope: str) -> dict[str, Any]:
    """A plain scope as a grant of type ``scope``."""
    return {"type": "scope", "scope": scope}


def grants_of(scopes: Iterable[str], details: Iterable[Grant]) -> tuple[Grant, ...]:
    """Everything a credential holds: its plain scopes as grants, then its details."""
    return (*(scope_grant(s) for s in scopes), *details)


def plain_scopes(details: Iterable[Grant]) -> tuple[tuple[str, ...], tuple[Grant, ...]]:
    """Split grants into plain scopes (``scope`` grants without limits, which travel in
    the ``scope`` claim) and the rest (which travel as ``authorization_details``)."""
    scopes: dict[str, None] = {}
    rest: list[Grant] = []
    for grant in details:
        if grant.get("type") == "scope" and "limits" not in grant:
            scopes[str(grant["scope"])] = None
        else:
            rest.append(grant)
    return tuple(scopes), tuple(rest)


def holds_critical_scope(
    scopes: Iterable[str], details: Sequence[Grant], patterns: Sequence[str]
) -> bool:
    """True iff a credential's authority touches a critical scope pattern
    (``critical_scopes``): a scope of its ``scope`` claim, or of a ``scope`` grant among
    its ``details``, overlaps one (:func:`~tasklease.rules.scopes.overlaps`).

    A ``scope`` grant with ``limits`` travels only in ``authorization_details``
    (:func:`plain_scopes`) yet allows what the scope names, so it is as critical as the
    scope: the one rule of the broker's high assurance, its token cache and the
    verifier's outage policy. ``details`` are read only when there are any, so a token
    without them costs what the ``scope`` claim's check always did.
    """
    if scope_rules.overlaps(scopes, patterns):
        return True
    if not details or not patterns:
        return False
    granted = (
        grant["scope"]
        for grant in details
        if grant.get("type") == "scope" and isinstance(grant.get("scope"), str)
    )
    return scope_rules.overlaps(granted, patterns)


# --- narrowing -------------------------------------------------------------------------


def location_covers(allowed: str, location: str) -> bool:
    """True iff ``location`` is ``allowed`` or below it: ``allowed`` + ``/`` + more, or
    ``allowed`` ending in ``/`` + more. Locations with dot segments or encoded separators
    are never covered.

    Covering compares every location of a grant with every one of its parent's (32
    grants of 64 locations each against as many): the text comparison comes first, and
    the check of the location's text is made once per location (:func:`_bad_location`),
    not once per comparison, which for long locations took seconds a request."""
    if location != allowed:
        prefix = allowed if allowed.endswith("/") else allowed + "/"
        if not location.startswith(prefix):
            return False
    if len(location) > MAX_TEXT:  # no grant's: a call's, checked as it is, not remembered
        return BAD_LOCATION.search(location) is None
    return not _bad_location(location)


@functools.lru_cache(maxsize=4096)
def _bad_location(location: str) -> bool:
    """Whether ``location`` (at most :data:`MAX_TEXT` characters) holds what
    :data:`BAD_LOCATION` refuses, remembered: the answer depends on the text alone."""
    return BAD_LOCATION.search(location) is not None


_SCALARS = (str, int, float)  # bool is an int: type() tells them apart


def same_json_value(first: object, second: object) -> bool:
    """Whether two values are one JSON value: ``true``, ``1`` and ``1.0`` are three, not
    one (Python's ``==`` takes them for the same). The one equality of grant values, for
    covering (:func:`covers`) and for what a grant allows (``rules.grantuse``) alike."""
    if isinstance(first, _SCALARS) or isinstance(second, _SCALARS):
        return type(first) is type(second) and first == second  # bool is not int, 1.0 not 1
    try:
        return canonical({"v": first}) == canonical({"v": second})
    except (TypeError, ValueError):  # not JSON (a call's value may be anything)
        return False


def _subset(child: Sequence[Any], parent: Sequence[Any]) -> bool:
    return all(any(same_json_value(item, mine) for mine in parent) for item in child)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def limits_cover(parent: Mapping[str, Any] | None, child: Mapping[str, Any] | None) -> bool:
    """True iff the limits ``child`` are at least as tight as ``parent``."""
    if not parent:
        return True
    if not child:
        return False
    if "max_amount" in parent:
        if "max_amount" not in child or child.get("currency") != parent.get("currency"):
            return False
        if Decimal(child["max_amount"]) > Decimal(parent["max_amount"]):
            return False
    if "max_calls" in parent and child.get("max_calls", MAX_CALLS + 1) > parent["max_calls"]:
        return False
    if "not_before" in parent and child.get("not_before", -1) < parent["not_before"]:
        return False
    if "not_after" in parent and child.get("not_after", 2**41) > parent["not_after"]:
        return False
    if "allowed_values" in parent:
        mine = child.get("allowed_values") or {}
        for name, values in parent["allowed_values"].items():
            if name not in mine or not _subset(mine[name], values):
                return False
    return True


def _resource_access_covers(parent: Grant, child: Grant) -> bool:
    if not _subset(child.get("actions", ()), parent.get("actions", ())):
        return False
    if "locations" in parent:
        if "locations" not in child:
            return False
        for location in child["locations"]:
            if not any(location_covers(p, location) for p in parent["locations"]):
                return False
    for name in ("datatypes", "privileges"):
        if name in parent and (name not in child or not _subset(child[name], parent[name])):
            return False
    return "identifier" not in parent or child.get("identifier") == parent["identifier"]


def _custom_covers(parent: Grant, child: Grant, rule: TypeRule) -> bool:
    for name, value in parent.items():
        if name in ("type", "limits"):
            continue
        if name not in child:
            return False
        mine = child[name]
        op = rule.operator(name)
        if op == "subset":
            if not (isinstance(mine, list) and isinstance(value, list) and _subset(mine, value)):
                return False
        elif op in ("at_most", "at_least"):
            if not (_number(mine) and _number(value)):
                return False
            if (op == "at_most" and mine > value) or (op == "at_least" and mine < value):
                return False
        elif op == "prefix":
            if not (isinstance(mine, str) and isinstance(value, str) and mine.startswith(value)):
                return False
        elif op == "path":
            if not (
                isinstance(mine, str) and isinstance(value, str) and location_covers(value, mine)
            ):
                return False
        elif canonical({"v": mine}) != canonical({"v": value}):
            return False
    return True


def covers(parent: Grant, child: Grant, rules: Mapping[str, TypeRule] | None = None) -> bool:
    """True iff the grant ``parent`` covers ``child`` (same type, narrower or equal).

    An operator's type without a rule in ``rules`` covers only an identical grant.
    """
    kind = child.get("type")
    if parent.get("type") != kind:
        return False
    if not limits_cover(parent.get("limits"), child.get("limits")):
        return False
    if kind == "scope":
        return scope_rules.covers(str(parent.get("scope")), str(child.get("scope")))
    if kind == "resource_access":
        return _resource_access_covers(parent, child)
    rule = (rules or {}).get(str(kind))
    if rule is None:
        return canonical(parent) == canonical(child)
    return _custom_covers(parent, child, rule)


def uncovered(
    children: Iterable[Grant],
    parents: Sequence[Grant],
    rules: Mapping[str, TypeRule] | None = None,
) -> list[Grant]:
    """The child grants that no parent grant covers (empty: the child set narrows)."""
    return [c for c in children if not any(covers(p, c, rules) for p in parents)]


def common(
    first: Sequence[Grant],
    second: Sequence[Grant],
    rules: Mapping[str, TypeRule] | None = None,
) -> tuple[Grant, ...]:
    """Grants covered by both sets: each grant of one that the other covers.

    Whatever this set covers, both sets cover (covering is transitive): the ceiling of a
    credential with two ancestors.
    """
    out: dict[str, Grant] = {}
    for mine, other in ((first, second), (second, first)):
        for grant in mine:
            if any(covers(o, grant, rules) for o in other):
                out.setdefault(canonical(grant), grant)
    return tuple(out.values())
