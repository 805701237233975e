"""The operators' registry of grant types (``tasklease grant-type add/list/show/remove``).

A type is a name, a JSON Schema (2020-12) its grants must match and a narrowing rule
(``rules.grants.TypeRule``); ``core.granttypes`` reads them for issuance. Adding and
removing are audited; a type is never changed in place (remove it and add it anew).
"""

from __future__ import annotations

import json
import re
from typing import Any

from tasklease.core.auditformat import AuditEntry, clipped, detail_field
from tasklease.core.callers import change_refused
from tasklease.core.errors import Conflict, InvalidRequest, NotFound, TaskleaseError
from tasklease.core.granttypes import MAX_SCHEMA_BYTES
from tasklease.core.kernel import Kernel, RequestContext, Service, with_denial
from tasklease.core.records import GrantTypeRecord
from tasklease.core.store import WriteTx
from tasklease.core.tokens import Claims
from tasklease.rules import grants as grant_rules
from tasklease.rules.grants import BUILTIN_TYPES, GrantError

__all__ = ["GrantTypes", "nested_repetition"]

_EVENT = "grant_type_denied"


def nested_repetition(schema: object) -> str | None:
    """The first regular expression of ``schema`` (a ``pattern``, or a key of
    ``patternProperties``) holding a repetition inside a repetition, or None.

    Grants are checked against a type's schema on the request's path, by Python's
    backtracking matcher: ``^(a+)+$`` takes seconds on 25 characters an agent chooses, and
    the event loop with it. A repeat (more than once) nested in another is refused at
    registration; possessive repeats and atomic groups do not backtrack and pass.
    """
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "pattern" and isinstance(value, str):
                    found.append(value)
                elif key == "patternProperties" and isinstance(value, dict):
                    found.extend(k for k in value if isinstance(k, str))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    for pattern in found:
        try:
            parsed = _PARSER.parse(pattern)
        except re.error:
            continue  # not ours to judge: the schema check refuses what it must
        if _repeats_within(list(parsed), inside=False):
            return pattern
    return None


# CPython's own regular-expression parser (``re`` uses it; it has no type stubs). Its
# opcodes are named constants, compared here by name.
_PARSER: Any = getattr(re, "_parser")  # noqa: B009 - a private module, looked up at run time


def _repeats_within(items: list[Any], *, inside: bool) -> bool:
    """True when a backtracking repeat (more than once) holds another one."""
    for op, arg in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, sub = arg
            unbounded = str(high) == "MAXREPEAT"
            varies = unbounded or high > low  # a{2} matches one way: nothing to try again
            if varies and inside:
                return True
            if _repeats_within(list(sub), inside=inside or (varies and (unbounded or high > 1))):
                return True
        elif name == "SUBPATTERN":
            if _repeats_within(list(arg[-1]), inside=inside):
                return True
        elif name == "BRANCH":
            if any(_repeats_within(list(branch), inside=inside) for branch in arg[1]):
                return True
        elif name in ("ASSERT", "ASSERT_NOT") and _repeats_within(list(arg[1]), inside=inside):
            return True
    return False


class GrantTypes(Service):
    """The operators' registry of grant types. Thread-safe; one per broker."""

    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel)

    def add(
        self,
        claims: Claims,
        *,
        name: object,
        schema: object,
        narrowing: object,
        description: object = None,
        ctx: RequestContext,
    ) -> GrantTypeRecord:
        """Register grant type ``name``.

        Raises:
            InvalidRequest: a malformed name, schema (not a JSON Schema 2020-12 object
                schema) or narrowing rule; a built-in type's name.
            Conflict: the type exists (remove it first: grants already issued keep the
                rule they were narrowed by only while it stays the same); audited.
        """
        if not isinstance(name, str) or not grant_rules.is_type_name(name):
            raise InvalidRequest(
                "name must be a type name: a letter, then letters, digits and _ . : / -"
            )
        if name in BUILTIN_TYPES:
            raise InvalidRequest(f"{name} is a built-in type")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise InvalidRequest('schema must be a JSON Schema object with "type": "object"')
        text = json.dumps(schema, separators=(",", ":"), sort_keys=True)
        if len(text) > MAX_SCHEMA_BYTES:
            raise InvalidRequest(f"schema must be at most {MAX_SCHEMA_BYTES} bytes")
        # Imported here, as in core.granttypes: only a grant type's definition needs it.
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise InvalidRequest(
                f"schema is not a JSON Schema: {clipped(exc.message, 200)}"
            ) from None
        nested = nested_repetition(schema)
        if nested is not None:
            raise InvalidRequest(
                f"schema pattern {clipped(nested, 100)!r} repeats a repetition: checking an "
                "agent's grant against it can take exponential time",
                hint="write it without a repeat inside a repeat, e.g. ^a+$ for ^(a+)+$",
            )
        try:
            rule = grant_rules.parse_type_rule(narrowing if narrowing is not None else {})
        except GrantError as exc:
            raise InvalidRequest(exc.reason) from None
        if description is not None and (not isinstance(description, str) or len(description) > 512):
            raise InvalidRequest("description must be a string of at most 512 characters")
        record = GrantTypeRecord(
            name=name,
            schema=text,
            narrowing=json.dumps(dict(rule.fields), separators=(",", ":"), sort_keys=True),
            description=description or "",
            created_at=self._kernel.now(),
            created_by=claims.sub,
        )
        if self._store.get_grant_type(name) is not None:
            raise self._kernel.deny(
                _exists(name),
                change_refused(_EVENT, "grant type", f"add {name}: exists", claims, ctx),
            )
        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            try:
                tx.insert_grant_type(record)  # the check above, again under the write lock
            except Conflict:  # nothing written (the store inserts only a new name)
                refused[:] = [_exists(name)]
                return [
                    with_denial(
                        refused[0],
                        change_refused(_EVENT, "grant type", f"add {name}: exists", claims, ctx),
                    )
                ]
            return [
                AuditEntry(
                    "grant_type_added",
                    request_id=ctx.request_id,
                    detail=f"{detail_field('grant_type', name)} "
                    f"{detail_field('narrowing', record.narrowing)} by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
        if refused:
            raise refused[0]
        return record

    def list_types(self) -> list[GrantTypeRecord]:
        return self._store.list_grant_types()

    def get(self, name: str) -> GrantTypeRecord:
        record = self._store.get_grant_type(name) if isinstance(name, str) else None
        if record is None:
            raise NotFound("grant type not found")
        return record

    def remove(self, claims: Claims, name: str, ctx: RequestContext) -> GrantTypeRecord:
        """Remove grant type ``name``: requests naming it are refused from now on, and
        tokens that carry its grants narrow them only to identical ones.

        Raises:
            NotFound: no such type, before or while this ran (audited).
        """
        record = self._store.get_grant_type(name) if isinstance(name, str) else None
        if record is None:
            why = f"remove {clipped(str(name), 128)}: no such grant type"
            raise self._kernel.deny(
                _missing(), change_refused(_EVENT, "grant type", why, claims, ctx)
            )
        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            if not tx.delete_grant_type(record.name):
                refused[:] = [_missing()]
                why = f"remove {record.name}: no such grant type"
                return [
                    with_denial(refused[0], change_refused(_EVENT, "grant type", why, claims, ctx))
                ]
            return [
                AuditEntry(
                    "grant_type_removed",
                    request_id=ctx.request_id,
                    detail=f"{detail_field('grant_type', record.name)} by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
        if refused:
            raise refused[0]
        return record


def _exists(name: str) -> Conflict:
    return Conflict(f"grant type {name} exists", hint="remove it first to register it anew")


def _missing() -> NotFound:
    return NotFound("grant type not found")
