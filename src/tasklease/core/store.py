"""What the core needs from storage: records and two small Protocols.

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

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

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
    "Store",
    "StoreWatch",
    "TenantRecord",
    "TileAppend",
    "WatchableStore",
    "WriteTx",
]


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """A tenant other than the default one: its own trust domain, keys, apps and audit.

    Tenants are never deleted: a removed one keeps its row (``status`` "removed"), so its
    name and trust domain are never given to another and its audit chain stays readable.
    """

    name: str  # the tenant id: in URLs (/t/<name>) and on each of its rows
    trust_domain: str
    status: str  # "active" | "removed"
    created_at: float
    created_by: str
    removed_at: float | None = None


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
    # base64url of the raw Ed25519 key for private_key_jwt (RFC 7523); "" for none.
    public_key: str = ""
    # Structured grants of the app's ceiling besides its scopes (RFC 9396, rules.grants).
    authorization_details: tuple[Mapping[str, Any], ...] = ()


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
    consumed_at: float | None = None  # when its last use was taken
    # RFC 8707 resources a registration may name (empty: the broker's default audience).
    audience: tuple[str, ...] = ()
    # The human (or other principal) the work is done for, ``kind:value``; "" means the
    # creator (``admin`` or ``app:<app_id>``). See docs/agents.md.
    principal: str = ""
    # How many registrations it admits (1 for a single-use token), and how many it did.
    max_uses: int = 1
    uses: int = 0
    # Whether the agents it launches may resume by key (``core.renewal``).
    allow_resume: bool = True
    # Structured grants of its ceiling besides ``allowed_scope`` (RFC 9396, rules.grants).
    authorization_details: tuple[Mapping[str, Any], ...] = ()

    @property
    def uses_left(self) -> int:
        return max(0, self.max_uses - self.uses)


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    """A named operator (``core.operators``): one credential and one role.

    The credential is either ``secret_hash`` (argon2id, never the secret) or
    ``public_key`` (a raw 32-byte Ed25519 key that signs challenge nonces); the other is
    empty. A removed operator keeps its record with both emptied, so its name is never
    given to someone else. ``updated_at`` is the last change of credential or status.
    """

    name: str
    role: str  # "admin" | "operator" | "auditor"
    secret_hash: str
    public_key: bytes
    status: str  # "active" | "removed"
    created_at: float
    updated_at: float
    created_by: str


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
    # The holder's proof-of-possession binding as compact JSON, e.g. {"jkt":"..."} or
    # {"x5t#S256":"..."} (RFC 7800 ``cnf``); "" for an unbound agent. Delegated tokens
    # for this agent are bound to it, so the delegate proves possession itself.
    cnf: str = ""
    # The resources (RFC 8707) the agent registered for; () means the broker's default.
    audience: tuple[str, ...] = ()
    # The longest lifetime one of its tokens may have (its launch token's ``max_ttl``);
    # 0 for agents registered before it was recorded (the broker's default TTL then).
    token_ttl: int = 0
    # Its launch token's ``allow_resume``: whether it may resume by key after a restart.
    allow_resume: bool = True
    # The structured grants it registered with besides ``scope`` (RFC 9396).
    authorization_details: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class AgentSession:
    """Per-agent task state beside the registration (``core.liveness``).

    ``principal`` is the human the agent works for. The agent is swept when
    ``heartbeat_required`` and ``last_heartbeat`` is older than interval x misses;
    ``resumes`` counts crash-recovery resumptions. ``state``: ``active``, ``released``
    (declared itself done) or ``silent_revoked`` (swept). Pruned after ``expires_at``.
    """

    agent_id: str
    principal: str
    heartbeat_required: bool
    last_heartbeat: float
    resumes: int
    state: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class DiscoveryBinding:
    """An agent's endpoint, signed by its registered key (``core.discovery``)."""

    agent_id: str
    endpoint: str
    issued_at: int
    signature: bytes  # 64-byte Ed25519 signature over discovery.statement(...)
    expires_at: float


@dataclass(frozen=True, slots=True)
class ReferenceTokenRecord:
    """A by-reference (opaque) token: only its SHA-256 is stored, with its claims.

    ``claims`` is the compact JSON payload the token would have carried as a JWT and
    ``kind`` its ``typ``; ``expires_at`` is the claims' ``exp`` plus the clock skew.
    """

    token_hash: str  # sha256 hex of the opaque token
    kind: str
    claims: str
    jti: str
    expires_at: float


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
class FederationRecord:
    """A federated trust domain (``core.federation``): where its bundle comes from, the
    last good bundle, and the policy for credentials from it.

    The bundle comes from ``bundle_endpoint_url`` (SPIFFE Federation ``https_web``; the
    server certificate checked against ``ca_pem``, or the system store when empty), or is
    static (``bundle_endpoint_url`` empty: the operator gave it). ``bundle`` is the last
    good bundle as served (JSON text, "" before the first), ``fetched_at`` when it was
    fetched or given, ``last_error`` why the latest attempt failed ("" if it did not).
    A fetched bundle older than ``max_bundle_age`` seconds is no longer trusted.
    ``scope_map`` pairs a foreign scope pattern (a scope; ``*`` as its identifier covers
    any) with the local scope it maps to,
    ``scope_ceiling`` bounds the local scopes, ``max_ttl`` the lifetime of tokens minted
    from this domain's credentials. ``created_at`` changes when the record is replaced:
    a refresh started before then does not write over the new record.
    """

    trust_domain: str
    bundle_endpoint_url: str
    ca_pem: str
    max_bundle_age: int
    scope_map: tuple[tuple[str, str], ...]
    scope_ceiling: tuple[str, ...]
    max_ttl: int
    bundle: str
    fetched_at: float | None
    last_error: str
    created_at: float
    created_by: str
    checked_at: float | None = None  # the latest attempt to fetch, successful or not
    # Revocation across the bridge (core.peerfeed): the peer broker's base URL whose
    # /v1/revocations/stream we follow ("" none), and the path of a 0600 JSON file with the
    # client_id and client_secret of the app the peer's operator made for us (only the
    # path is stored, never the secret).
    revocation_feed: str = ""
    feed_credentials_file: str = ""

    @property
    def static(self) -> bool:
        """Whether the bundle was given by the operator rather than fetched."""
        return not self.bundle_endpoint_url


@dataclass(frozen=True, slots=True)
class AttestorRecord:
    """A configured workload attestor (``core.attestation``) and its policy.

    ``type`` is an attestor type (``k8s_sat``, ``jwt_svid``, ``oidc``), ``settings`` its
    configuration and ``policy`` its rules (the claims they match, the scope ceiling, TTL
    and lifetime they grant), both compact JSON as the operator gave them, checked.
    ``app_id`` names the app whose agents it registers ("" for the tenant's own).
    """

    name: str
    type: str
    settings: str
    policy: str
    app_id: str
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class GrantTypeRecord:
    """An operator's grant type (``core.granttypes``): the JSON Schema its grants must
    match and the rule by which one narrows (``rules.grants.TypeRule``), both compact
    JSON as the operator gave them, checked."""

    name: str
    schema: str
    narrowing: str
    description: str
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class CallBudget:
    """The calls a grant with ``max_calls`` has left (``core.calls``).

    ``key`` names the grant of one credential (``<grant thread>:<grant digest>``);
    ``parent`` the budget of the grant it was narrowed from ("" for none): a call counts
    against it too, so no delegation multiplies calls. Pruned after ``expires_at``.
    """

    key: str
    parent: str
    max_calls: int
    calls: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class PublishedBundle:
    """This broker's own trust bundle as last published (``core.trustbundle``).

    ``kids`` is the space-separated key ids it holds, ``bundle`` the bundle as served but
    for its refresh hint (``rules.bundle``), ``sequence`` its ``spiffe_sequence``: raised
    by one on every change of the key set, never lowered.
    """

    sequence: int
    kids: str
    bundle: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One stored audit event; ``hash`` chains it to ``prev_hash`` (see ``core.audit``).

    ``version`` is the format its hash was computed in (``rules.auditchain``): 1 for
    events written before lineage was recorded, 2 since, whose hash also covers
    ``tenant``, ``app_id``, ``principal_ref`` and ``chain_root``. Leaf ``index`` of the
    tenant's Merkle tree is this event.
    """

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
    tenant: str = "default"
    app_id: str = ""
    principal_ref: str = ""
    chain_root: str = ""
    version: int = 1

    @property
    def id(self) -> str:
        return f"evt-{self.seq:06d}"

    @property
    def index(self) -> int:
        """Its leaf index in the tenant's Merkle tree (``seq - 1``)."""
        return self.seq - 1


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
    principal_ref: str | None = None  # the human principal's pseudonym (format v2 events)


@dataclass(frozen=True, slots=True)
class AuditTree:
    """A tenant's Merkle tree over its audit events (``core.audittree``): its size, its
    root, and its right edge: the hashes of the complete subtrees that make up its leaves,
    largest first (one per set bit of ``size``), from which the next append goes on."""

    size: int
    root: bytes
    edge: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class TileAppend:
    """Hashes appended to one tile of the tree: ``level`` and ``index`` name the tile,
    ``offset`` is how many 32-byte hashes it held before, ``hashes`` what follows them."""

    level: int
    index: int
    offset: int
    hashes: bytes


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """The latest checkpoint of one kind: ``signed`` by the log key, or ``final`` (with
    the witnesses' cosignatures the configuration requires). ``note`` is the signed note."""

    kind: str
    size: int
    note: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ListQuery:
    """One page of an operator's listing (``core.inventory``): the rows after ``after``
    (the last key of the previous page) in the listing's order, at most ``limit``, with
    the equality filters given (None: any)."""

    app_id: str | None = None
    task_id: str | None = None
    principal: str | None = None
    level: str | None = None  # revocations
    after: tuple[float, str] | None = None
    limit: int = 100


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
        """Replace the tenant named ``tenant.name``; raise ``NotFound`` if there is none."""
        ...

    def insert_app(self, app: AppRecord) -> None:
        """Raise ``core.errors.Conflict`` if the name or client_id is taken."""
        ...

    def update_app(self, app: AppRecord) -> None: ...

    def insert_operator(self, operator: OperatorRecord) -> None:
        """Raise ``core.errors.Conflict`` if the name is taken (by a removed one too)."""
        ...

    def update_operator(self, operator: OperatorRecord) -> None:
        """Replace the operator named ``operator.name``; raise ``NotFound`` if none."""
        ...

    def insert_launch_token(self, record: LaunchTokenRecord) -> None: ...

    def consume_launch_token(self, token_hash: str, now: float) -> bool:
        """Atomically take one use of a launch token.

        True iff it existed, was unexpired at ``now`` and had a use left; the use is
        counted (``uses``), and taking the last one sets ``consumed_at`` to ``now``. Of
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

    def insert_revocation(self, record: RevocationRecord) -> bool:
        """Store a revocation; False (and nothing written) if (level, target) is present.

        A present entry whose ``expires_at`` is earlier is extended to the new values.
        """
        ...

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        """The session as this transaction sees it (read under its write lock)."""
        ...

    def put_agent_session(self, session: AgentSession) -> None:
        """Insert or replace the session of ``session.agent_id``."""
        ...

    def acquire_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        """Take or extend the named lease; True iff it was free, expired or ours.

        One holder at a time across every process sharing the store: the check and the
        write happen under this transaction's lock.
        """
        ...

    def put_discovery_binding(self, binding: DiscoveryBinding) -> None:
        """Insert or replace the binding of ``binding.agent_id``."""
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

    def put_grant_type(self, record: GrantTypeRecord) -> None:
        """Insert or replace the grant type named ``record.name``."""
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
        """Entries with ``seq`` greater than the argument, in ``seq`` order."""
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

    def audit_tree(self) -> AuditTree | None:
        """The tenant's Merkle tree as last committed (None before its first leaf)."""
        ...

    def audit_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The tiles named ``(level, index)`` that exist, each its hashes concatenated."""
        ...

    def get_checkpoint(self, kind: str) -> CheckpointRecord | None:
        """The latest checkpoint of ``kind`` (``signed`` or ``final``), or None."""
        ...

    def prune(self, now: float) -> int:
        """Delete expired revocations, used nonces and DPoP proofs, launch tokens,
        by-reference tokens, agent sessions, discovery bindings, leases, used
        attestation evidence, call budgets and offline report keys; return rows removed."""
        ...

    def safe_horizon(self) -> float | None:
        """The greatest horizon :meth:`raise_safe_horizon` recorded, or None (``core.horizon``)."""
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
