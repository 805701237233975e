"""Grant types: the built-in ones and those operators register, and checking grants.

The types ``scope`` and ``resource_access`` are built in (``rules.grants``). An operator
registers more per tenant (``tasklease grant-type add``): a name, a JSON Schema (2020-12)
every grant of the type must match, and a narrowing rule (each member ``equal``,
``subset``, ``at_most``, ``at_least``, ``prefix`` or ``path``; ``rules.grants.TypeRule``). A grant's
``limits`` are the broker's for every type and are not part of the schema.

:class:`GrantTypeRegistry` is what issuance reads: the rules of the types a request names
(:meth:`~GrantTypeRegistry.rules`, for the kernel's attenuation check) and the checking of
a request's ``authorization_details`` (:meth:`~GrantTypeRegistry.check`: RFC 9396 section
5, ``invalid_authorization_details``). It reads a type's record from the store when a
grant names it (a point read), and keeps each record's compiled schema until the record
changes. The operators' registry is ``core.grantadmin``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasklease.core.auditformat import clipped
from tasklease.core.errors import InvalidAuthorizationDetails
from tasklease.core.lru import LRUCache
from tasklease.core.records import GrantTypeRecord
from tasklease.core.store import Store
from tasklease.rules import grants as grant_rules
from tasklease.rules.grants import BUILTIN_TYPES, GrantError, TypeRule

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

__all__ = ["MAX_SCHEMA_BYTES", "GrantTypeRegistry"]

MAX_SCHEMA_BYTES = 65_536
_COMPILED = 256
"""Compiled types kept at once, the least recently used dropped first: one per name ever
checked would grow with every type an operator adds and removes, while the store holds
only the live ones."""


@dataclass(frozen=True, slots=True)
class _Compiled:
    record: GrantTypeRecord
    validator: Draft202012Validator
    rule: TypeRule


def _compile(record: GrantTypeRecord) -> _Compiled:
    # Imported here: most brokers define no grant type of their own, and every broker
    # process (a worker, the CLI) would otherwise load JSON Schema at start.
    from jsonschema import Draft202012Validator

    schema = json.loads(record.schema)
    rule = grant_rules.parse_type_rule(json.loads(record.narrowing))
    return _Compiled(record, Draft202012Validator(schema), rule)


class GrantTypeRegistry:
    """The tenant's grant types as issuance needs them. Thread-safe."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._compiled: LRUCache[str, _Compiled] = LRUCache(_COMPILED)

    def _type(self, name: str) -> _Compiled | None:
        record = self._store.get_grant_type(name)
        if record is None:
            self._compiled.discard(name)
            return None
        found = self._compiled.get(name)
        if found is None or found.record != record:
            found = _compile(record)
            self._compiled.put(name, found)
        return found

    def rules(self, names: Collection[str]) -> Mapping[str, TypeRule]:
        """The narrowing rules of the operators' types among ``names`` that exist (a
        type without a rule narrows only to an identical grant)."""
        out: dict[str, TypeRule] = {}
        for name in names:
            if name not in BUILTIN_TYPES:
                found = self._type(name)
                if found is not None:
                    out[name] = found.rule
        return out

    def check(self, raw: object, *, field: str) -> tuple[dict[str, Any], ...]:
        """A request's ``authorization_details`` as checked grants (``()`` for None).

        Raises:
            InvalidAuthorizationDetails: not a list of well-formed grants, an unknown
                type, or a grant its type's schema refuses (RFC 9396 section 5).
        """
        if raw is None:
            return ()
        try:
            details = grant_rules.parse_details(raw, field)
        except GrantError as exc:
            raise InvalidAuthorizationDetails(exc.reason) from None
        for grant in details:
            kind = str(grant["type"])
            if kind in BUILTIN_TYPES:
                continue
            found = self._type(kind)
            if found is None:
                raise InvalidAuthorizationDetails(
                    f"unknown authorization details type: {clipped(kind, 64)}",
                    hint="the types are scope, resource_access and those an operator adds",
                )
            body = {k: v for k, v in grant.items() if k != "limits"}
            error = next(iter(found.validator.iter_errors(body)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(grant)"
                raise InvalidAuthorizationDetails(
                    f"{field}: a {clipped(kind, 64)} grant does not match its schema at {where}: "
                    f"{clipped(error.message, 200)}"
                )
        return details
