"""The operators' registry of grant types (``tasklease grant-type add/list/show/remove``).

A type is a name, a JSON Schema (2020-12) its grants must match and a narrowing rule
(``rules.grants.TypeRule``); ``core.granttypes`` reads them for issuance. Adding and
removing are audited; a type is never changed in place (remove it and add it anew).
"""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from tasklease.core.auditformat import AuditEntry
from tasklease.core.errors import Conflict, InvalidRequest, NotFound
from tasklease.core.granttypes import MAX_SCHEMA_BYTES
from tasklease.core.kernel import Kernel, RequestContext, Service
from tasklease.core.records import GrantTypeRecord
from tasklease.core.store import WriteTx
from tasklease.core.tokens import Claims
from tasklease.rules import grants as grant_rules
from tasklease.rules.grants import BUILTIN_TYPES, GrantError

__all__ = ["GrantTypes"]


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
                rule they were narrowed by only while it stays the same).
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
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise InvalidRequest(f"schema is not a JSON Schema: {exc.message[:200]}") from None
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
            raise Conflict(f"grant type {name} exists", hint="remove it first to register it anew")

        def unit(tx: WriteTx) -> list[AuditEntry]:
            tx.put_grant_type(record)
            return [
                AuditEntry(
                    "grant_type_added",
                    request_id=ctx.request_id,
                    detail=f"grant_type={name} narrowing={record.narrowing} by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
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
        tokens that carry its grants narrow them only to identical ones."""
        record = self.get(name)

        def unit(tx: WriteTx) -> list[AuditEntry]:
            if not tx.delete_grant_type(record.name):
                raise NotFound("grant type not found")
            return [
                AuditEntry(
                    "grant_type_removed",
                    request_id=ctx.request_id,
                    detail=f"grant_type={record.name} by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
        return record
