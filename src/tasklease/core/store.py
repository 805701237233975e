"""What the core needs from storage: the Store and WriteTx Protocols over the records of
``core.records`` (re-exported here).

Implementations live in ``tasklease.storage`` (memory, SQLite, PostgreSQL) and all pass
one conformance suite. The core never sees SQL.

Writes happen only inside :meth:`Store.write`, one transaction that commits on a clean
exit and rolls back on an exception. The group committer in ``core.audit`` runs several
operations in one such transaction, each inside :meth:`WriteTx.savepoint`, so one
operation's failure undoes only its own writes.

Secrets are never stored: launch tokens, nonces and by-reference tokens are kept as
SHA-256 hex digests; app and operator secrets as argon2id hashes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from tasklease.core.errors import InvalidRequest
from tasklease.core.records import (
    MAX_TARGET,
    AgentRecord,
    AgentSession,
    AppRecord,
    AttestorRecord,
    AuditEvent,
    AuditQuery,
    AuditTree,
    CallBudget,
    CheckpointRecord,
    DiscoveryBinding,
    FederationRecord,
    GrantTypeRecord,
    LaunchTokenRecord,
    ListQuery,
    OperatorRecord,
    PublishedBundle,
    ReferenceTokenRecord,
    RevocationRecord,
    RevocationWrite,
    TenantRecord,
    TileAppend,
    target_size,
)

__all__ = [
    "AgentRecord",
    "AgentSession",
    "AppRecord",
    "AttestorRecord",
    "AuditEvent",
    "AuditQuery",
    "AuditTree",
    "CallBudget",
    "CheckpointRecord",
    "DiscoveryBinding",
    "FederationRecord",
    "GrantTypeRecord",
    "LaunchTokenRecord",
    "ListQuery",
    "OperatorRecord",
    "PublishedBundle",
    "ReferenceTokenRecord",
    "RevocationRecord",
    "RevocationWrite",
    "Store",
    "StoreWatch",
    "TenantRecord",
    "TileAppend",
    "WatchableStore",
    "WriteTx",
    "check_revocation_target",
]


def check_revocation_target(record: RevocationRecord) -> None:
    """What every store's :meth:`WriteTx.insert_revocation` checks first: raise
    ``InvalidRequest`` for a target longer than :data:`MAX_TARGET` bytes (an event that
    size on the revocation feed would be too large for its readers, and a row that size
    more than PostgreSQL's index on it holds)."""
    size = target_size(record.target)
    if size > MAX_TARGET:
        raise InvalidRequest(
            "revocation target is too long",
            reason=f"{record.level}-level target of {size} bytes, at most {MAX_TARGET}",
        )


class WriteTx(Protocol):
    """Writes inside one transaction, to the rows of the store's tenant."""

    def savepoint(self) -> AbstractContextManager[None]:
        """Undo this block's writes if it raises; the transaction goes on."""
        ...

    def insert_tenant(self, tenant: TenantRecord) -> None:
        """Record a new tenant (the registry is shared by every tenant's store).

        Raise ``core.errors.Conflict`` if its name or trust domain is already recorded.
        """
        ...

    def update_tenant(self, tenant: TenantRecord) -> None:
        """Replace the active tenant named ``tenant.name``; raise ``NotFound`` if there is
        none (no such name, or removed: a removed tenant stays so, and a removal racing
        another is refused)."""
        ...

    def insert_app(self, app: AppRecord) -> None:
        """Raise ``core.errors.Conflict`` if the name or client_id is taken."""
        ...

    def get_app(self, app_id: str) -> AppRecord | None:
        """The app as this transaction sees it, locked until it ends: a change made from
        it cannot interleave with another's (a deregistration, an update)."""
        ...

    def update_app(self, app: AppRecord) -> None: ...

    def insert_operator(self, operator: OperatorRecord) -> None:
        """Raise ``core.errors.Conflict`` if the name is taken (by a removed one too)."""
        ...

    def get_operator(self, name: str) -> OperatorRecord | None:
        """The operator as this transaction sees it, locked until it ends: a change made
        from it cannot interleave with another's (a removal, a rotation)."""
        ...

    def update_operator(self, operator: OperatorRecord) -> None:
        """Replace the operator named ``operator.name``; raise ``NotFound`` if none."""
        ...

    def insert_launch_token(self, record: LaunchTokenRecord) -> None: ...

    def consume_launch_token(self, token_hash: str, now: float) -> bool:
        """Atomically take one use of a launch token.

        True iff it existed, was unexpired at ``now``, had a use left and its creator was
        not ended since it was made (no ``agent``-level revocation of ``created_by`` with
        ``revoked_at`` at or after ``created_at``, as this transaction sees them); the use
        is counted (``uses``), and taking the last one sets ``consumed_at`` to ``now``. Of
        any number of concurrent callers, exactly as many win as it had uses left.
        """
        ...

    def consume_nonce(self, nonce_hash: str, expires_at: float) -> bool:
        """Record a nonce as used; False if it was used before."""
        ...

    def consume_dpop_proof(self, proof_hash: str, expires_at: float) -> bool:
        """Record a DPoP proof (its key's hash) as used until ``expires_at``; False if it
        was used before: by any worker or replica sharing the store (RFC 9449 11.1)."""
        ...

    def insert_agent(self, agent: AgentRecord) -> None: ...

    def set_agent_status(self, agent_id: str, status: str) -> None: ...

    def insert_revocation(self, record: RevocationRecord) -> RevocationWrite:
        """Store a revocation under a fresh ``seq`` (``record.seq`` is ignored).

        A present (level, target) takes the later ``revoked_at`` and the later
        ``expires_at`` of the two, under a fresh ``seq`` if either changed. Returns what
        was done: inserted, widened or nothing (:class:`RevocationWrite`). Raises
        ``InvalidRequest`` for a target longer than ``MAX_TARGET``
        (:func:`check_revocation_target`).
        """
        ...

    def find_revocation(self, level: str, target: str) -> RevocationRecord | None:
        """The entry at ``level`` on ``target`` as this transaction sees it: committed
        before its write lock was taken, or written by this transaction (an earlier unit
        of its batch), or None."""
        ...

    def find_revocations(self, keys: Sequence[tuple[str, str]]) -> list[RevocationRecord]:
        """The entries at each ``(level, target)`` of ``keys`` there are, as this
        transaction sees them (:meth:`find_revocation`), in no particular order: point
        reads by the unique key, in one statement where the store can (PostgreSQL)."""
        ...

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        """The session as this transaction sees it (read under its write lock)."""
        ...

    def put_agent_session(self, session: AgentSession) -> None:
        """Insert or replace the session of ``session.agent_id``."""
        ...

    def raise_resumes(self, agent_id: str, resumes: int) -> bool | None:
        """Set the session's ``resumes`` to ``resumes`` where it is lower and the session
        is active (one statement: a renewal's count and standing, checked and written
        under this transaction's lock). True if set, False if it was already at or above
        it or the session is no longer active, None when the agent has no session."""
        ...

    def acquire_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        """Take or extend the named lease; True iff it was free, expired or ours.

        One holder at a time across every process sharing the store: the check and the
        write happen under this transaction's lock.
        """
        ...

    def release_lease(self, name: str, holder: str) -> bool:
        """Give the named lease up if ``holder`` holds it (expired or not), so that
        another holder can take it at once; True iff it did. A lease another holder
        holds is left as it is."""
        ...

    def put_discovery_binding(self, binding: DiscoveryBinding) -> bool:
        """Insert the binding of ``binding.agent_id``, or replace one whose ``issued_at``
        is earlier; False (nothing written) if the stored one is as new or newer. One
        statement, so two concurrent binds cannot both replace the same binding."""
        ...

    def insert_reference_token(self, record: ReferenceTokenRecord) -> None:
        """Store a by-reference token; raise ``Conflict`` if its hash is already present."""
        ...

    def get_federation(self, trust_domain: str) -> FederationRecord | None:
        """The federated domain as this transaction sees it, locked until it ends."""
        ...

    def put_federation(self, record: FederationRecord) -> None:
        """Insert or replace the federated domain ``record.trust_domain``."""
        ...

    def delete_federation(self, trust_domain: str) -> bool:
        """Remove the federated domain; False if there was none."""
        ...

    def put_feed_heard(self, trust_domain: str, heard_at: float) -> None:
        """Record that the federated domain's revocation feed was current at ``heard_at``
        (never moved back: a later time already recorded stays)."""
        ...

    def put_retired_key(self, kid: str, retired_at: float) -> bool:
        """Record the signing key ``kid`` as retired (its first retirement's time stays);
        False when it was recorded already."""
        ...

    def get_published_bundle(self) -> PublishedBundle | None:
        """This broker's published bundle, locked until the transaction ends."""
        ...

    def put_attestor(self, record: AttestorRecord) -> None:
        """Insert or replace the attestor named ``record.name``."""
        ...

    def delete_attestor(self, name: str) -> bool:
        """Remove the attestor ``name``; False if there was none."""
        ...

    def consume_evidence(self, evidence_key: str, expires_at: float) -> bool:
        """Record attestation evidence (by its key, a hash) as used until ``expires_at``;
        False if it was used before. Of concurrent callers exactly one wins."""
        ...

    def consume_offline_report(self, report_key: str, expires_at: float) -> bool:
        """Record an offline derivation or use (by its report key) as audited until
        ``expires_at``; False if it was recorded before. Of concurrent callers exactly one
        wins, so a report sent twice is audited once."""
        ...

    def insert_grant_type(self, record: GrantTypeRecord) -> None:
        """Store a new grant type; raise ``core.errors.Conflict`` if one of its name
        exists (two adds at once: one is refused, never silently replaced)."""
        ...

    def delete_grant_type(self, name: str) -> bool:
        """Remove the grant type ``name``; False if there was none."""
        ...

    def put_call_budget(self, budget: CallBudget) -> None:
        """Record a grant's call budget unless one with its key exists (then nothing)."""
        ...

    def count_call(self, key: str) -> str:
        """Count one call against the budget ``key`` and every budget above it (its
        ``parent``, theirs, ...), all or none, under this transaction's lock.

        Returns "" when counted, else the key of the budget that is spent or missing
        (nothing is counted then).
        """
        ...

    def get_call_budget(self, key: str) -> CallBudget | None:
        """The budget ``key`` as this transaction sees it."""
        ...

    def put_published_bundle(self, bundle: PublishedBundle) -> None:
        """Insert or replace this broker's published bundle."""
        ...

    def get_admin_credential(self) -> str | None:
        """The built-in admin secret's hash the broker last started with, locked until
        this transaction ends (one for the whole database), or None (``core.adminsecret``)."""
        ...

    def put_admin_credential(self, secret_hash: str, changed_at: float) -> None:
        """Record the built-in admin secret's hash the broker starts with."""
        ...

    def audit_head(self) -> tuple[int, str]:
        """(last seq, last hash) under this transaction's lock; (0, 64 zeros) when empty."""
        ...

    def append_audit(self, events: Sequence[AuditEvent]) -> None: ...

    def audit_tree(self) -> AuditTree | None:
        """The tenant's Merkle tree as this transaction sees it (None before its first
        leaf); read after :meth:`audit_head`, under the same lock."""
        ...

    def audit_hashes(self, after_seq: int, limit: int) -> list[str]:
        """The hashes of at most ``limit`` events with ``seq > after_seq``, in seq order."""
        ...

    def append_audit_tree(self, tree: AuditTree, tiles: Sequence[TileAppend]) -> None:
        """Append to the tiles and record ``tree`` as the tenant's tree.

        Raise ``Conflict`` if a tile does not hold exactly ``offset`` hashes: the tree on
        record is not the one the append extends.
        """
        ...

    def put_checkpoint(self, record: CheckpointRecord) -> bool:
        """Keep ``record`` as the latest of its kind unless a larger one is kept; True if
        it was stored."""
        ...


class Store(Protocol):
    """Durable state of one tenant. Reads may run concurrently from many threads.

    Every read and write is limited to the rows of :attr:`tenant`; a store opened on a
    database is the default tenant's, and :meth:`for_tenant` gives another tenant's
    view of the same database (sharing its connections; closing one closes all).
    """

    # True when a read is served on this machine (a file or memory) in microseconds, so
    # an event loop may read inline; False when a read is a network round trip.
    local_reads: bool
    # True when a transaction's statements, its commit apart, may run on an event loop's
    # thread while another thread holds the transaction: none is a network round trip,
    # and none waits on a lock that a read on the loop could be holding
    # (:mod:`tasklease.core.handoff`).
    statements_on_loop: bool

    async def read_ahead(self, query: object) -> Any:
        """The answer to ``query``, a read that a first half run on an event loop asked
        for (:class:`tasklease.core.readahead.ReadNeeded`), fetched without blocking the
        loop; what the read raises is raised. Raise ``readahead.InThread`` when it
        cannot be had that way (the caller runs the first half in a thread). Called
        only when :attr:`local_reads` is False."""
        ...

    @property
    def tenant(self) -> str:
        """The tenant whose rows this store reads and writes."""
        ...

    def for_tenant(self, tenant: str) -> Store:
        """This database limited to ``tenant``'s rows; ``ValueError`` for a bad tenant id."""
        ...

    def get_tenant(self, name: str) -> TenantRecord | None:
        """The tenant registry's record of ``name`` (whichever tenant's store is asked)."""
        ...

    def list_tenants(self) -> list[TenantRecord]:
        """Every recorded tenant, removed ones too, by name."""
        ...

    def write(self) -> AbstractContextManager[WriteTx]: ...

    def get_app(self, app_id: str) -> AppRecord | None: ...

    def get_app_by_client_id(self, client_id: str) -> AppRecord | None: ...

    def list_apps(self) -> list[AppRecord]:
        """Newest first."""
        ...

    def get_operator(self, name: str) -> OperatorRecord | None: ...

    def list_operators(self) -> list[OperatorRecord]:
        """Every operator, removed ones too, by name."""
        ...

    def get_launch_token(self, token_hash: str) -> LaunchTokenRecord | None: ...

    def get_agent(self, agent_id: str) -> AgentRecord | None: ...

    def load_revocations(self, now: float) -> list[RevocationRecord]:
        """Every entry with ``expires_at > now``, in ``seq`` order."""
        ...

    def revocations_since(self, seq: int) -> list[RevocationRecord]:
        """Entries with ``seq`` greater than the argument, in ``seq`` order (expired ones
        too, until pruned)."""
        ...

    def revocation_high_water(self) -> int:
        """The last ``seq`` handed out to this tenant's revocations (0: none yet). Below a
        cursor a reader holds, the database went back in time (a failover to a standby
        that missed the last commits, a restore) and numbers above it will be reused."""
        ...

    def find_revocations(self, keys: Sequence[tuple[str, str]]) -> list[RevocationRecord]:
        """The stored entries whose ``(level, target)`` is among ``keys`` (expired ones too).

        A point read for high-assurance validation, which must not trust any cache.
        """
        ...

    def get_agent_session(self, agent_id: str) -> AgentSession | None: ...

    def silent_agents(self, before: float, limit: int) -> list[AgentSession]:
        """Active sessions with ``heartbeat_required`` and ``last_heartbeat < before``,
        oldest heartbeat first, at most ``limit``."""
        ...

    def live_agents(self, now: float, registered_from: float) -> int:
        """How many agents of the whole database, every tenant's but a removed one's
        (the default tenant is never removed), are live (``core.activeagents``):
        ``registered_at >= registered_from``, status ``active``, ``ceiling`` 0 or after
        ``now``, no session or an ``active`` one, no app row that is not ``active`` (the
        broker deletes no app), and no
        revocation entry in force at ``now`` (``expires_at > now``) at level ``task`` on
        its task made in or after the second it registered (``revoked_at + 1 >
        registered_at``), nor at level ``chain`` on its app (``app:<app_id>``) or on an
        id its ``lineage`` lists. One count, whichever tenant's store is asked."""
        ...

    def get_discovery_binding(self, agent_id: str) -> DiscoveryBinding | None: ...

    def get_reference_token(self, token_hash: str) -> ReferenceTokenRecord | None:
        """The by-reference token with this hash, expired or not (the caller checks)."""
        ...

    # -- operators' listings (core.inventory): newest first, keyset-paged ----------------

    def list_agents(self, query: ListQuery) -> list[tuple[AgentRecord, AgentSession | None]]:
        """Registered agents, each with its session if it still has one, newest first:
        by ``(registered_at, agent_id)`` descending, after ``query.after``. Filters:
        ``app_id``, ``task_id``, ``principal`` (the session's)."""
        ...

    def list_launch_tokens(self, query: ListQuery, now: float) -> list[LaunchTokenRecord]:
        """Outstanding launch tokens (a use left, unexpired at ``now``), newest first: by
        ``(created_at, token_hash)`` descending, after ``query.after``. Filters:
        ``app_id``, ``principal``."""
        ...

    def list_revocations(self, query: ListQuery) -> list[RevocationRecord]:
        """Stored revocation entries, newest first: by ``seq`` descending, below
        ``query.after[0]``. Filter: ``level``."""
        ...

    def audit_mentioning(
        self, text: str, event_types: Sequence[str], limit: int
    ) -> list[AuditEvent]:
        """Events of the given types whose detail holds ``text`` (letters, digits, ``=``
        and ``_`` only), in ``seq`` order, at most ``limit``: a scan of those types."""
        ...

    def get_federation(self, trust_domain: str) -> FederationRecord | None: ...

    def list_federations(self) -> list[FederationRecord]:
        """Every federated domain, by name."""
        ...

    def feed_heard(self, trust_domain: str) -> float | None:
        """When the federated domain's revocation feed was last heard current, or None
        (never, or it has no feed)."""
        ...

    def retired_keys(self) -> frozenset[str]:
        """The ``kid`` of every signing key retired: no process trusts one of them."""
        ...

    def admin_credential(self) -> str | None:
        """The hash of the admin secret the broker last started with, or None (read
        without the lock ``WriteTx.get_admin_credential`` takes)."""
        ...

    def get_published_bundle(self) -> PublishedBundle | None: ...

    def get_attestor(self, name: str) -> AttestorRecord | None: ...

    def list_attestors(self) -> list[AttestorRecord]:
        """Every attestor, by name."""
        ...

    def get_grant_type(self, name: str) -> GrantTypeRecord | None: ...

    def list_grant_types(self) -> list[GrantTypeRecord]:
        """Every operator's grant type, by name."""
        ...

    def audit_head(self) -> tuple[int, str]: ...

    def query_audit(self, query: AuditQuery) -> tuple[list[AuditEvent], int]:
        """Matching events in ``seq`` order after offset/limit, and the match count."""
        ...

    def iter_audit(self, after_seq: int = 0, batch: int = 5000) -> Iterator[AuditEvent]:
        """Every event with ``seq > after_seq`` in ``seq`` order, fetched in batches."""
        ...

    def iter_audit_ts(
        self, after_seq: int = 0, batch: int = 5000
    ) -> Iterator[tuple[AuditEvent, float]]:
        """As :meth:`iter_audit`, each event with the ``ts`` stored beside it: the
        timestamp in Unix seconds that time filters read, which the hash does not cover
        (``auditformat.timestamp_seconds``)."""
        ...

    def audit_tree(self) -> AuditTree | None:
        """The tenant's Merkle tree as last committed (None before its first leaf)."""
        ...

    def audit_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The tiles named ``(level, index)`` that exist, each its hashes concatenated."""
        ...

    def get_checkpoint(self, kind: str) -> CheckpointRecord | None:
        """The latest checkpoint of ``kind`` (``signed`` or ``final``), or None."""
        ...

    def database_id(self) -> str:
        """What names this database and every copy of it (a backup, a restore, a standby):
        when its schema was first made (a new database has another; ``core.rollback``);
        "" for a database that has no copies (memory)."""
        ...

    def prune(self, now: float) -> int:
        """Delete expired revocations, used nonces and DPoP proofs, launch tokens,
        by-reference tokens, agent sessions, discovery bindings, leases, used
        attestation evidence, call budgets and offline report keys; return rows removed."""
        ...

    def safe_horizon(self) -> float | None:
        """The greatest horizon :meth:`raise_safe_horizon` recorded, or None (``core.horizon``)."""
        ...

    def server_time(self) -> float | None:
        """The database server's wall clock now (Unix seconds), or None for a store with
        no clock of its own (in memory, SQLite: the process's host is the only one)."""
        ...

    def raise_safe_horizon(self, horizon: float) -> float:
        """Record ``horizon`` unless a greater one is recorded; return the greater (durable)."""
        ...

    def close(self) -> None: ...


# -- optional capability: change notification -----------------------------------------------


class StoreWatch(Protocol):
    """A running watch (see :class:`WatchableStore`)."""

    def close(self) -> None:
        """Stop watching; no call of ``on_change`` starts after this returns."""
        ...


class WatchableStore(Protocol):
    """A store that tells its processes when another process committed revocations.

    Optional: the core looks for ``start_watch`` with ``getattr`` (``Broker``
    ``.watch_revocations``), so a store without it (memory, SQLite) is polled with
    ``revocations_since`` instead. PostgreSQL implements it with LISTEN/NOTIFY.
    """

    def start_watch(
        self, on_change: Callable[[float | None], None], *, interval: float = 1.0
    ) -> StoreWatch:
        """Call ``on_change`` from a background thread whenever revocations may be new.

        ``on_change(committed_at)`` gets the wall-clock time at which another process
        committed a revocation (for the propagation metric), or None: for the store's own
        commits, after every (re)connection (to pick up what was missed) and as a
        check-in at least every ``interval`` seconds while the store is reachable. The
        callee reads ``revocations_since``; a read that starts after a call has returned
        sees every revocation committed before that call. While the store is unreachable
        there are no calls, so the callee can tell it is no longer current. An exception
        from ``on_change`` is logged and the watch goes on.
        """
        ...
