"""Tenants: the registry's operations (create, list, remove). What a tenant id is lives
in :mod:`tasklease.core.tenantids` (re-exported here).

A broker hosts the default tenant (today's paths, the configured trust domain) and any
number of others, each a SPIFFE trust domain of its own with its own signing keys,
issuer, apps, launch tokens, agents, revocations, operators and audit chain, served under
``/t/<name>/``. Each tenant is served by its own :class:`~tasklease.core.broker.Broker`
over a store limited to its rows (``Store.for_tenant``): isolation is by construction,
not by a check in each route. The registry lives in the default tenant's broker; only
its operators (``admin:tenants:*``) manage tenants.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import PurePath

from tasklease.core.auditformat import AuditEntry, clipped, detail_field
from tasklease.core.config import Config
from tasklease.core.errors import Conflict, InvalidRequest, NotFound, TaskleaseError
from tasklease.core.kernel import RequestContext, Service, with_denial
from tasklease.core.keydirs import TENANT_KEY_DIRS
from tasklease.core.records import TenantRecord
from tasklease.core.spiffe import validate_trust_domain
from tasklease.core.store import WriteTx
from tasklease.core.tenantids import (
    DEFAULT_TENANT,
    TENANT_PATH_PREFIX,
    check_tenant_id,
    tenant_id_error,
)
from tasklease.core.tokens import Claims

__all__ = [
    "DEFAULT_TENANT",
    "FIRST_OPERATOR",
    "TENANT_KEY_DIRS",
    "TENANT_PATH_PREFIX",
    "Tenants",
    "check_tenant_id",
    "tenant_config",
    "tenant_id_error",
    "tenant_issuer",
    "tenant_key_dir",
]

# A tenant's first operator (role admin), made with it: a tenant whose store holds it
# (active or removed: names are never reused) was created to the end.
FIRST_OPERATOR = "admin"


def tenant_config(base: Config, tenant: TenantRecord) -> Config:
    """The configuration ``tenant``'s broker runs with: the base one, with the tenant's
    trust domain and issuer, and no admin secret (a tenant's operators are its own)."""
    return replace(
        base,
        trust_domain=tenant.trust_domain,
        issuer=tenant_issuer(base.issuer, tenant.name),
        admin_secret_hash="",
        key_dir=tenant_key_dir(base.key_dir, tenant.name),
        # The process's metrics are the platform's, not a tenant's: served by the
        # metrics listener and the default tenant only.
        metrics_public="off",
    )


def tenant_key_dir(base_key_dir: str, tenant: str) -> str:
    """Where ``tenant``'s signing keys live: ``<key_dir>/tenants/<tenant>`` ("" if none)."""
    return str(PurePath(base_key_dir, TENANT_KEY_DIRS, tenant)) if base_key_dir else ""


def tenant_issuer(base_issuer: str, tenant: str) -> str:
    """The ``iss`` of ``tenant``'s tokens: the default tenant's issuer + ``/t/<tenant>``
    (with a URL issuer, that is the tenant's own base URL)."""
    return f"{base_issuer.rstrip('/')}{TENANT_PATH_PREFIX}{tenant}"


class Tenants(Service):
    """The tenant registry: create, list, remove. Served by the default tenant's broker;
    its events go to the default tenant's audit chain."""

    def create(
        self, claims: Claims, *, name: object, trust_domain: object, ctx: RequestContext
    ) -> TenantRecord:
        """Record a new tenant, or return one whose creation did not finish.

        ``trust_domain`` defaults to ``<name>.<the default tenant's trust domain>``. The
        caller then sets up the tenant's keys and first operator (``tasklease.tenancy``);
        a tenant that exists already is returned as it is (to be finished: a tenant
        created to the end is refused then, by :meth:`refuse_complete`).

        Raises:
            InvalidRequest: a malformed name or trust domain, or a reserved name.
            Conflict: the name or the trust domain is taken, or the tenant was removed.
        """
        if not isinstance(name, str) or not name:
            raise InvalidRequest("missing required field: name")
        problem = tenant_id_error(name)
        if problem is not None:
            raise InvalidRequest(f"invalid tenant name: {problem}")
        if name == DEFAULT_TENANT:
            raise InvalidRequest(f'"{DEFAULT_TENANT}" is the default tenant\'s name')
        if trust_domain is None or trust_domain == "":
            trust_domain = f"{name}.{self._config.trust_domain}"
        if not isinstance(trust_domain, str):
            raise InvalidRequest("trust_domain must be a string")
        try:
            validate_trust_domain(trust_domain)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        if trust_domain == self._config.trust_domain:
            raise self._refuse(Conflict("tenant trust domain already exists"), name, claims, ctx)
        existing = self._store.get_tenant(name)
        if existing is not None:
            if existing.status != "active":
                raise self._refuse(
                    Conflict("tenant was removed (names are never reused)"), name, claims, ctx
                )
            if existing.trust_domain != trust_domain:
                raise self._refuse(Conflict("tenant name already exists"), name, claims, ctx)
            return existing
        record = TenantRecord(
            name=name,
            trust_domain=trust_domain,
            status="active",
            created_at=self._kernel.now(),
            created_by=claims.sub,
        )

        def unit(tx: WriteTx) -> list[AuditEntry]:
            tx.insert_tenant(record)
            return [
                AuditEntry(
                    "tenant_created",
                    request_id=ctx.request_id,
                    detail=f"{detail_field('tenant', name)} "
                    f"{detail_field('trust_domain', trust_domain)} by={claims.sub}",
                )
            ]

        try:
            self._kernel.commit(unit)
        except Conflict as exc:
            raise self._refuse(exc, name, claims, ctx) from None
        return record

    def refuse_complete(self, claims: Claims, record: TenantRecord, ctx: RequestContext) -> None:
        """Refuse to finish the creation of ``record`` when it was created to the end:
        its store holds its first operator (active or removed: names are never reused).

        Refused as the registry's conflict, in the default tenant's log, never as its
        first operator's name taken, in the tenant's own log (its admins did nothing).

        Raises:
            Conflict: the tenant exists, whole (audited).
        """
        if self._store.for_tenant(record.name).get_operator(FIRST_OPERATOR) is None:
            return
        name = record.name
        raise self._refuse(
            Conflict(
                f"tenant {name} already exists: its admins (its operator "
                f"{FIRST_OPERATOR} first) manage it under {TENANT_PATH_PREFIX}{name}/"
            ),
            name,
            claims,
            ctx,
        )

    def list_tenants(self) -> list[TenantRecord]:
        """Every tenant but the default one, removed ones too, by name."""
        return self._store.list_tenants()

    def get(self, name: str) -> TenantRecord | None:
        """The active tenant ``name``, or None (unknown, removed or malformed alike)."""
        if tenant_id_error(name) is not None:
            return None
        record = self._store.get_tenant(name)
        return record if record is not None and record.status == "active" else None

    def remove(self, claims: Claims, name: object, ctx: RequestContext) -> TenantRecord:
        """Mark a tenant removed: it is no longer served, so nothing of it is usable.

        Its rows and audit chain stay (readable by the default tenant's operators through
        the database, never served), and its name and trust domain are never reused.

        Raises:
            NotFound: no active tenant of that name, before or while this ran (another
                process removed it meanwhile: nothing is written again), audited.
        """
        record = self.get(name) if isinstance(name, str) else None
        if record is None:
            shown = name if isinstance(name, str) else ""
            raise self._refuse(NotFound("tenant not found"), shown, claims, ctx)
        removed = replace(record, status="removed", removed_at=self._kernel.now())
        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            try:
                tx.update_tenant(removed)  # only while still active, under the write lock
            except NotFound as exc:
                refused[:] = [exc]
                return [with_denial(exc, self._refused_entry(exc, record.name, claims, ctx))]
            return [
                AuditEntry(
                    "tenant_removed",
                    request_id=ctx.request_id,
                    detail=f"{detail_field('tenant', record.name)} by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
        if refused:
            raise refused[0]
        return removed

    def _refuse(
        self, error: TaskleaseError, name: str, claims: Claims, ctx: RequestContext
    ) -> TaskleaseError:
        return self._kernel.deny(error, self._refused_entry(error, name, claims, ctx))

    @staticmethod
    def _refused_entry(
        error: TaskleaseError, name: str, claims: Claims, ctx: RequestContext
    ) -> AuditEntry:
        return AuditEntry(
            "tenant_refused",
            outcome="denied",
            request_id=ctx.request_id,
            detail=f"{detail_field('tenant', clipped(name, 64))} by={claims.sub}: {error.detail}",
        )
