"""The reads whose logic both SQL stores share: :class:`SQLStore`, which each extends."""

from __future__ import annotations

import abc
import copy
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Self

from tasklease.core.readahead import InThread
from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AppRecord,
    AttestorRecord,
    AuditEvent,
    AuditQuery,
    AuditTree,
    CheckpointRecord,
    DiscoveryBinding,
    FederationRecord,
    GrantTypeRecord,
    LaunchTokenRecord,
    OperatorRecord,
    PublishedBundle,
    ReferenceTokenRecord,
    RevocationRecord,
    TenantRecord,
)
from tasklease.storage._sql.dialect import (
    Dialect,
    Row,
    attestor_from_row,
    binding_from_row,
    grant_type_from_row,
    published_bundle_from_row,
    reference_from_row,
    revocation_from_row,
    session_from_row,
    tenant_from_row,
)
from tasklease.storage._sql.listings import ListingReads
from tasklease.storage._sql.schema import newer_error, older_error
from tasklease.storage._sql.write_tx import SQLWriteTx, tree_from_row

__all__ = ["SQLStore", "SQLWriteTx", "SharedState"]


# -- what the stores share ---------------------------------------------------------------


class SharedState:
    """What a store and its tenant views (:meth:`SQLStore.for_tenant`) change together."""

    def __init__(self) -> None:
        self.closed = False
        self.write_owner: int | None = None  # the thread inside write(), if any
        self.full_at: int | None = None  # free bytes when a commit last found the disk full
        self.connect_errors = 0  # PostgreSQL: the pool's failed connection attempts, last seen


class SQLStore(ListingReads, abc.ABC):
    """The reads (and ``prune``) whose logic both dialects share.

    A subclass sets :attr:`dialect` (the default tenant's), creates ``_shared`` first thing
    in its constructor and provides ``write``, ``close``, ``schema_version`` and three ways
    to run a read: :meth:`_one`, :meth:`_all` and :meth:`_count_and_page`.

    A store reads and writes the default tenant's rows; :meth:`for_tenant` gives a view
    of another tenant's that shares the connections, locks and state.
    """

    dialect: Dialect
    _shared: SharedState

    async def read_ahead(self, query: object) -> Any:
        """See ``Store.read_ahead``; a store whose reads are local reads on the loop."""
        raise InThread("this store reads locally")

    def for_tenant(self, tenant: str) -> Self:
        """This store limited to ``tenant``'s rows (every statement names it).

        The view shares everything else with this store: closing either closes both.
        Raise ``ValueError`` if ``tenant`` is not a valid tenant id.
        """
        view = copy.copy(self)
        view.dialect = self.dialect.for_tenant(tenant)
        return view

    @property
    def tenant(self) -> str:
        """The tenant whose rows this store reads and writes."""
        return self.dialect.tenant

    # The state the views share, under the names the stores use.
    @property
    def _closed(self) -> bool:
        return self._shared.closed

    @_closed.setter
    def _closed(self, value: bool) -> None:
        self._shared.closed = value

    @property
    def _write_owner(self) -> int | None:
        return self._shared.write_owner

    @_write_owner.setter
    def _write_owner(self, value: int | None) -> None:
        self._shared.write_owner = value

    @property
    def _full_at(self) -> int | None:
        return self._shared.full_at

    @_full_at.setter
    def _full_at(self, value: int | None) -> None:
        self._shared.full_at = value

    @property
    def _connect_errors(self) -> int:
        return self._shared.connect_errors

    @_connect_errors.setter
    def _connect_errors(self, value: int) -> None:
        self._shared.connect_errors = value

    @abc.abstractmethod
    def write(self) -> AbstractContextManager[SQLWriteTx[Any]]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version recorded in the database (0 before the first migration)."""

    @abc.abstractmethod
    def _one(self, sql: str, params: Row) -> Row | None:
        """The first row of a read, or None."""

    @abc.abstractmethod
    def _all(self, sql: str, params: Row = ()) -> list[Row]:
        """Every row of a read."""

    @abc.abstractmethod
    def _count_and_page(
        self, count_sql: str, count_params: list[object], page_sql: str, page_params: list[object]
    ) -> tuple[int, list[Row]]:
        """The count of one read and the rows of another, both from one snapshot."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schema --------------------------------------------------------------------------

    @classmethod
    def known_schema_version(cls) -> int:
        """The newest schema version this code knows."""
        return len(cls.dialect.migrations())

    def _check_schema(self) -> None:
        known = self.known_schema_version()
        current = self.schema_version()
        if current > known:
            raise newer_error(current, known)
        if current < known:
            raise older_error(current, known)

    # -- writes --------------------------------------------------------------------------

    def prune(self, now: float) -> int:
        """Delete revocations, used nonces, launch tokens, by-reference tokens, agent
        sessions, discovery bindings and leases with ``expires_at <= now``.

        Return the number of rows removed. Audit events are never touched.
        """
        with self.write() as tx:
            return tx._delete_expired(now)

    def raise_safe_horizon(self, horizon: float) -> float:
        """Record ``horizon`` unless a greater one is recorded; return the greater."""
        with self.write() as tx:
            return tx._raise_safe_horizon(horizon)

    def safe_horizon(self) -> float | None:
        row = self._one(self.dialect.safe_horizon, ())
        return None if row is None else float(row[0])

    def server_time(self) -> float | None:
        """None: SQLite's clock is the process's own (PostgreSQL overrides this)."""
        return None

    # -- reads ---------------------------------------------------------------------------

    def get_tenant(self, name: str) -> TenantRecord | None:
        row = self._one(self.dialect.get_tenant, (name,))
        return None if row is None else tenant_from_row(row)

    def list_tenants(self) -> list[TenantRecord]:
        return [tenant_from_row(row) for row in self._all(self.dialect.list_tenants)]

    def get_app(self, app_id: str) -> AppRecord | None:
        row = self._one(self.dialect.get_app, (app_id,))
        return None if row is None else self.dialect.app_from_row(row)

    def get_app_by_client_id(self, client_id: str) -> AppRecord | None:
        row = self._one(self.dialect.get_app_by_client_id, (client_id,))
        return None if row is None else self.dialect.app_from_row(row)

    def list_apps(self) -> list[AppRecord]:
        """Newest first (by ``created_at``, ties by ``app_id`` descending)."""
        app_from_row = self.dialect.app_from_row
        return [app_from_row(row) for row in self._all(self.dialect.list_apps)]

    def get_operator(self, name: str) -> OperatorRecord | None:
        row = self._one(self.dialect.get_operator, (name,))
        return None if row is None else self.dialect.operator_from_row(row)

    def list_operators(self) -> list[OperatorRecord]:
        """Every operator, removed ones too, by name."""
        operator_from_row = self.dialect.operator_from_row
        return [operator_from_row(row) for row in self._all(self.dialect.list_operators)]

    def get_launch_token(self, token_hash: str) -> LaunchTokenRecord | None:
        row = self._one(self.dialect.get_launch_token, (token_hash,))
        return None if row is None else self.dialect.launch_token_from_row(row)

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        row = self._one(self.dialect.get_agent, (agent_id,))
        return None if row is None else self.dialect.agent_from_row(row)

    def load_revocations(self, now: float) -> list[RevocationRecord]:
        rows = self._all(self.dialect.load_revocations, (now,))
        return [revocation_from_row(row) for row in rows]

    def revocations_since(self, seq: int) -> list[RevocationRecord]:
        rows = self._all(self.dialect.revocations_since, (seq,))
        return [revocation_from_row(row) for row in rows]

    def revocation_high_water(self) -> int:
        row = self._one(self.dialect.revocation_high_water, ())
        return 0 if row is None else int(row[0])

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        row = self._one(self.dialect.get_session, (agent_id,))
        return None if row is None else session_from_row(row)

    def silent_agents(self, before: float, limit: int) -> list[AgentSession]:
        rows = self._all(self.dialect.silent_agents, (before, limit))
        return [session_from_row(row) for row in rows]

    def live_agents(self, now: float, registered_from: float) -> int:
        named = {"f": registered_from, "n": now}
        params = tuple(named[name] for name in self.dialect.live_agents_order)
        row = self._one(self.dialect.live_agents, params)
        return 0 if row is None else int(row[0])

    def get_discovery_binding(self, agent_id: str) -> DiscoveryBinding | None:
        row = self._one(self.dialect.get_binding, (agent_id,))
        return None if row is None else binding_from_row(row)

    def get_reference_token(self, token_hash: str) -> ReferenceTokenRecord | None:
        row = self._one(self.dialect.get_reference, (token_hash,))
        return None if row is None else reference_from_row(row)

    def get_federation(self, trust_domain: str) -> FederationRecord | None:
        row = self._one(self.dialect.get_federation, (trust_domain,))
        return None if row is None else self.dialect.federation_from_row(row)

    def feed_heard(self, trust_domain: str) -> float | None:
        row = self._one(self.dialect.feed_heard, (trust_domain,))
        return None if row is None else float(row[0])

    def retired_keys(self) -> frozenset[str]:
        return frozenset(str(row[0]) for row in self._all(self.dialect.retired_keys))

    def admin_credential(self) -> str | None:
        row = self._one(self.dialect.admin_credential, ())
        return None if row is None else str(row[0])

    def list_federations(self) -> list[FederationRecord]:
        """Every federated domain, by name."""
        federation_from_row = self.dialect.federation_from_row
        return [federation_from_row(row) for row in self._all(self.dialect.list_federations)]

    def get_published_bundle(self) -> PublishedBundle | None:
        row = self._one(self.dialect.get_published_bundle, ())
        return None if row is None else published_bundle_from_row(row)

    def get_attestor(self, name: str) -> AttestorRecord | None:
        row = self._one(self.dialect.get_attestor, (name,))
        return None if row is None else attestor_from_row(row)

    def get_grant_type(self, name: str) -> GrantTypeRecord | None:
        row = self._one(self.dialect.get_grant_type, (name,))
        return None if row is None else grant_type_from_row(row)

    def list_grant_types(self) -> list[GrantTypeRecord]:
        return [grant_type_from_row(row) for row in self._all(self.dialect.list_grant_types)]

    def list_attestors(self) -> list[AttestorRecord]:
        return [attestor_from_row(row) for row in self._all(self.dialect.list_attestors)]

    def query_audit(self, query: AuditQuery) -> tuple[list[AuditEvent], int]:
        """Events matching every given filter, in seq order after offset/limit, and the count.

        Raise ``ValueError`` for a negative limit or offset.
        """
        count_sql, count_params, page_sql, page_params = self.dialect.audit_query(query)
        total, rows = self._count_and_page(count_sql, count_params, page_sql, page_params)
        # The audit columns are selected in AuditEvent's field order and their types map
        # to exactly the field types (STRICT tables on SQLite): no per-column conversion.
        return [AuditEvent(*row) for row in rows], total

    def iter_audit(self, after_seq: int = 0, batch: int = 5000) -> Iterator[AuditEvent]:
        """Every event with ``seq > after_seq`` in seq order.

        Keyset pagination (``seq > last``, never OFFSET): each batch is one index range
        read, however deep the walk. Nothing stays open between batches, so a slow
        consumer holds no connection and pins no snapshot (on SQLite that would stop WAL
        checkpoints).
        """
        for rows in self._audit_pages(self.dialect.audit_after, after_seq, batch):
            for row in rows:
                yield AuditEvent(*row)

    def iter_audit_ts(
        self, after_seq: int = 0, batch: int = 5000
    ) -> Iterator[tuple[AuditEvent, float]]:
        """As :meth:`iter_audit`, each event with the ``ts`` stored beside it."""
        for rows in self._audit_pages(self.dialect.audit_after_ts, after_seq, batch):
            for row in rows:
                yield AuditEvent(*row[:-1]), float(row[-1])

    def _audit_pages(self, sql: str, after_seq: int, batch: int) -> Iterator[list[Row]]:
        """The pages of ``sql``'s rows after ``after_seq`` (its first column is ``seq``)."""
        if batch <= 0:
            raise ValueError("batch must be positive")
        cursor = after_seq
        while True:
            rows = self._all(sql, (cursor, batch))
            yield rows
            if len(rows) < batch:
                return
            cursor = int(rows[-1][0])

    def audit_indexed(self) -> int:
        """The last event the agent and task lookups cover (migration 0018)."""
        row = self._one(self.dialect.audit_indexed, ())
        return 0 if row is None else int(row[0])

    def iter_audit_lookups(self, upto: int, batch: int = 5000) -> Iterator[tuple[str, str, int]]:
        """Every lookup entry of an event up to ``upto``: ``("agent" or "task", key, seq)``.

        Entries up to :meth:`audit_indexed` are never rewritten, so pages read one after
        the other (keyset, no snapshot held) see all of them however the log grows.
        """
        if batch <= 0:
            raise ValueError("batch must be positive")
        for kind, sql in self.dialect.audit_lookup_pages:
            key, seq = "", 0
            while True:
                rows = self._all(sql, (key, seq, upto, batch))
                for row in rows:
                    yield kind, str(row[0]), int(row[1])
                if len(rows) < batch:
                    break
                key, seq = str(rows[-1][0]), int(rows[-1][1])

    def audit_tree(self) -> AuditTree | None:
        row = self._one(self.dialect.audit_tree, ())
        return None if row is None else tree_from_row(row)

    def audit_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The tiles among ``keys`` that exist, from one statement."""
        if not keys:
            return {}
        params = tuple(value for key in keys for value in key)
        rows = self._all(self.dialect.audit_tiles(len(keys)), params)
        return {(int(level), int(index)): bytes(hashes) for level, index, hashes in rows}

    def database_id(self) -> str:
        """When the first migration was applied here (``schema_version``), which every
        copy of the database (a backup, a dump, a standby) keeps, as ``repr`` of the float;
        never "" (a database that lost that row is named as no database is, and so judged
        against the anchors its log keys keep: ``core.rollback``)."""
        row = self._one("SELECT applied_at FROM schema_version WHERE version = 1", ())
        return "no schema_version 1" if row is None else repr(float(row[0]))

    def get_checkpoint(self, kind: str) -> CheckpointRecord | None:
        row = self._one(self.dialect.get_checkpoint, (kind,))
        if row is None:
            return None
        return CheckpointRecord(str(row[0]), int(row[1]), str(row[2]), float(row[3]))
