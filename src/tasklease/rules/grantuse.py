"""What a structured grant allows a resource server: the resource side of
``rules.grants``, shared by the verifier and the broker's call counting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from tasklease.rules import scopes as scope_rules
from tasklease.rules.grants import BAD_LOCATION, Grant, location_covers, same_json_value

CALL_MEMBERS = (
    "scope",
    "action",
    "location",
    "datatype",
    "privilege",
    "identifier",
    "amount",
    "currency",
    "values",
    "fields",
)
"""What a call may state for :func:`allows` to weigh: its keyword arguments but ``now``.
A resource server's call, the broker's counting route and the verifier refuse any other."""


def allows(
    grants: Iterable[Grant],
    kind: str,
    *,
    now: float,
    scope: str | None = None,
    action: str | None = None,
    location: str | None = None,
    datatype: str | None = None,
    privilege: str | None = None,
    identifier: str | None = None,
    amount: object = None,
    currency: str | None = None,
    values: Mapping[str, object] | None = None,
    fields: Mapping[str, object] | None = None,
) -> Grant | None:
    """The first grant of type ``kind`` that allows this call, or None.

    Every argument given must be allowed: ``scope`` by a ``scope`` grant's coverage;
    ``action``, ``datatype`` and ``privilege`` by membership; ``location`` by
    :func:`location_covers`; ``identifier`` by equality. Limits: a grant with
    ``max_amount`` allows only a call that states its ``amount`` (and ``currency``) within
    it; one with ``allowed_values`` only a call whose ``values`` give each named field an
    allowed value; a window only calls at ``now`` inside it (``not_before`` inclusive,
    ``not_after`` exclusive). ``fields`` are an operator's type's members: a list member
    allows its items, any other member its own value. ``max_calls`` is counted by the
    broker, never here.
    """
    for grant in grants:
        if grant.get("type") != kind:
            continue
        if _allows_one(
            grant,
            now=now,
            scope=scope,
            action=action,
            location=location,
            datatype=datatype,
            privilege=privilege,
            identifier=identifier,
            amount=amount,
            currency=currency,
            values=values or {},
            fields=fields or {},
        ):
            return grant
    return None


def _allows_one(
    grant: Grant,
    *,
    now: float,
    scope: str | None,
    action: str | None,
    location: str | None,
    datatype: str | None,
    privilege: str | None,
    identifier: str | None,
    amount: object,
    currency: str | None,
    values: Mapping[str, object],
    fields: Mapping[str, object],
) -> bool:
    if scope is not None and not (
        grant.get("type") == "scope" and scope_rules.covers(str(grant.get("scope")), scope)
    ):
        return False
    for name, given in (("actions", action), ("datatypes", datatype), ("privileges", privilege)):
        if given is not None:
            listed = grant.get(name)
            if listed is None:
                if name == "actions":
                    return False
            elif not _among(given, listed):
                return False
    if location is not None and "locations" in grant:
        if not any(location_covers(p, location) for p in grant["locations"]):
            return False
    elif location is not None and BAD_LOCATION.search(location):
        return False
    if identifier is not None and "identifier" in grant and grant["identifier"] != identifier:
        return False
    for name, value in fields.items():
        if name not in grant:
            continue
        if not _among(value, grant[name]):
            return False
    return _within_limits(grant.get("limits") or {}, now, amount, currency, values)


def _within_limits(
    limits: Mapping[str, Any],
    now: float,
    amount: object,
    currency: str | None,
    values: Mapping[str, object],
) -> bool:
    if "not_before" in limits and now < limits["not_before"]:
        return False
    if "not_after" in limits and now >= limits["not_after"]:
        return False
    if "max_amount" in limits:
        if amount is None or currency != limits["currency"]:
            return False
        if isinstance(amount, bool) or not isinstance(amount, str | int | float | Decimal):
            return False
        try:
            asked = Decimal(amount if isinstance(amount, str | Decimal) else str(amount))
        except InvalidOperation:
            return False
        if not asked.is_finite() or asked < 0:
            return False
        if asked > Decimal(limits["max_amount"]):
            return False
    for name, allowed in (limits.get("allowed_values") or {}).items():
        if name not in values or not _among(values[name], allowed):
            return False
    return True


def _among(value: object, allowed: object) -> bool:
    """Whether ``value`` is one of ``allowed`` (a list), or is ``allowed`` (anything else),
    compared as JSON (:func:`~tasklease.rules.grants.same_json_value`): ``true``, ``1``
    and ``1.0`` are three values, not one, and a string is never searched for a
    substring."""
    if isinstance(allowed, list):
        return any(same_json_value(value, member) for member in allowed)
    return same_json_value(value, allowed)
