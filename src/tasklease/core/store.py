"""What the core needs from storage: records and two small Protocols.

Implementations live in ``tasklease.storage`` (memory, SQLite, PostgreSQL) and all pass
one conformance suite. The core never sees SQL.

Writes happen only inside :meth:`Store.write`, one transaction that commits on a clean
exit and rolls back on an exception. The group committer in ``core.audit`` runs several
operations in one such transaction, each inside :meth:`WriteTx.savepoint`, so one
operation's failure undoes only its own writes.

Secrets are never stored: launch tokens, nonces and by-reference tokens are kept as
SHA-256 hex digests; app secrets as argon2id hashes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AgentRecord",
    "AppRecord",
    "AuditEvent",
    "AuditQuery",
    "LaunchTokenRecord",
    "RevocationRecord",
    "Store",
    "WriteTx",
]


@dataclass(frozen=True, slots=True)
class AppRecord:
    app_id: str
    name: str
    client_id: str
    secret_hash: str
    scopes: tuple[str, ...]
    token_ttl: int
    status: str  # "active" | "inactive"
    created_at: float
    updated_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class LaunchTokenRecord:
    token_hash: str  # sha256 hex of the launch token
    agent_name: str
    allowed_scope: tuple[str, ...]
    max_ttl: int
    single_use: bool
    created_at: float
    expires_at: float
    created_by: str
    app_id: str = ""  # "" when an admin created it
    consumed_at: float | None = None


@dataclass(frozen=True, slots=True)
class AgentRecord:
    agent_id: str  # SPIFFE ID
    public_key: bytes  # raw 32-byte Ed25519 public key
    orch_id: str
    task_id: str
    scope: tuple[str, ...]
    app_id: str
    client_id: str
    registered_at: float
    status: str = "active"  # "active" | "revoked"


@dataclass(frozen=True, slots=True)
class RevocationRecord:
    """A revocation at one level.

    ``revoked_at`` is whole seconds: it matches tokens whose ``iat`` is at or before it.
    ``expires_at`` is when no token it could match can still be valid; then it is pruned.
    ``seq`` is assigned by the store (monotonic) and lets replicas catch up.
    """

    level: str  # "token" | "agent" | "task" | "chain"
    target: str
    revoked_at: int
    expires_at: float
    seq: int = 0


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One stored audit event; ``hash`` chains it to ``prev_hash`` (see ``core.audit``)."""

    seq: int
    timestamp: str  # RFC 3339 UTC
    event_type: str
    agent_id: str
    task_id: str
    orch_id: str
    detail: str
    resource: str
    outcome: str
    deleg_depth: int
    deleg_chain_hash: str
    request_id: str
    prev_hash: str
    hash: str

    @property
    def id(self) -> str:
        return f"evt-{self.seq:06d}"


@dataclass(frozen=True, slots=True)
class AuditQuery:
    agent_id: str | None = None
    task_id: str | None = None
    event_type: str | None = None
    outcome: str | None = None
    since: float | None = None  # Unix seconds, inclusive
    until: float | None = None  # Unix seconds, inclusive
    limit: int = 100
    offset: int = 0


class WriteTx(Protocol):
    """Writes inside one transaction."""

    def savepoint(self) -> AbstractContextManager[None]:
        """Undo this block's writes if it raises; the transaction goes on."""
        ...

    def insert_app(self, app: AppRecord) -> None:
        """Raise ``core.errors.Conflict`` if the name or client_id is taken."""
        ...

    def update_app(self, app: AppRecord) -> None: ...

    def insert_launch_token(self, record: LaunchTokenRecord) -> None: ...

    def consume_launch_token(self, token_hash: str, now: float) -> bool:
        """Atomically mark a single-use launch token consumed.

        True iff it existed, was unexpired at ``now`` and unconsumed (multi-use tokens:
        True iff unexpired, and they are never marked). Exactly one concurrent caller wins.
        """
        ...

    def consume_nonce(self, nonce_hash: str, expires_at: float) -> bool:
        """Record a nonce as used; False if it was used before."""
        ...

    def insert_agent(self, agent: AgentRecord) -> None: ...

    def set_agent_status(self, agent_id: str, status: str) -> None: ...

    def insert_revocation(self, record: RevocationRecord) -> bool:
        """Store a revocation; False (and nothing written) if (level, target) is present.

        A present entry whose ``expires_at`` is earlier is extended to the new values.
        """
        ...

    def audit_head(self) -> tuple[int, str]:
        """(last seq, last hash) under this transaction's lock; (0, 64 zeros) when empty."""
        ...

    def append_audit(self, events: Sequence[AuditEvent]) -> None: ...


class Store(Protocol):
    """Durable state. Reads may run concurrently from many threads."""

    def write(self) -> AbstractContextManager[WriteTx]: ...

    def get_app(self, app_id: str) -> AppRecord | None: ...

    def get_app_by_client_id(self, client_id: str) -> AppRecord | None: ...

    def list_apps(self) -> list[AppRecord]:
        """Newest first."""
        ...

    def get_launch_token(self, token_hash: str) -> LaunchTokenRecord | None: ...

    def get_agent(self, agent_id: str) -> AgentRecord | None: ...

    def load_revocations(self, now: float) -> list[RevocationRecord]:
        """Every entry with ``expires_at > now``, in ``seq`` order."""
        ...

    def revocations_since(self, seq: int) -> list[RevocationRecord]:
        """Entries with ``seq`` greater than the argument, in ``seq`` order."""
        ...

    def audit_head(self) -> tuple[int, str]: ...

    def query_audit(self, query: AuditQuery) -> tuple[list[AuditEvent], int]:
        """Matching events in ``seq`` order after offset/limit, and the match count."""
        ...

    def iter_audit(self, after_seq: int = 0, batch: int = 5000) -> Iterator[AuditEvent]:
        """Every event with ``seq > after_seq`` in ``seq`` order, fetched in batches."""
        ...

    def prune(self, now: float) -> int:
        """Delete expired revocations, used nonces and launch tokens; return rows removed."""
        ...

    def close(self) -> None: ...
