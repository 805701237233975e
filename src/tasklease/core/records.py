"""The rows the core reads and writes through a Store: frozen record dataclasses."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_TARGET",
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
    "TenantRecord",
    "TileAppend",
    "target_size",
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
    # When its credential last changed: its registration, then each key added, replaced or
    # removed (``updated_at`` moves with its scopes too). Launch tokens it made before
    # then admit no agent (``core.registrationinputs``).
    credential_changed_at: float = 0.0


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
    # The agent's Ed25519 public key (base64url of its raw 32 bytes) that a registration
    # with it must present and prove; "" for any key (docs/agents.md).
    agent_key: str = ""

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
    # The ``attest`` claim its registration carried, as compact JSON (``rules.attest``:
    # what its workload proved or declared); "" for none. A resumption carries it on.
    attest: str = ""
    # The latest ``exp`` any token of its registration may have (its lineage's ``max_exp``:
    # earlier than ``renewal_ceiling`` allows when an attestation policy's ``lifetime`` is
    # shorter); 0 for agents registered before it was kept (``registration_ceiling``).
    ceiling: int = 0
    # The lineage ids its registration descends from, as its first token listed them
    # (``lineage.agent_lineage``: its app, its attestation, the federated domain whose
    # evidence it registered with); () for agents registered before it was kept.
    lineage: tuple[str, ...] = ()


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


MAX_TARGET = 2048
"""The longest revocation target, in UTF-8 bytes (:func:`target_size`): an operator's, a
federated domain's entry as ours (``fed:<domain>:...``), any a store takes. Every entry
fits, with room to spare, in one event of the revocation feed as verifiers and followers
read it (64 KiB), and in one row of PostgreSQL's unique index on (level, target), which
holds at most 2,704 bytes: 2,048 characters outside ASCII (up to 8 KiB) did not."""


def target_size(target: str) -> int:
    """The size of a revocation target as :data:`MAX_TARGET` bounds it: its UTF-8 bytes,
    what a database indexes (a lone surrogate, which no JSON body carries, counted as
    three). The one measure of every check of a target's length."""
    return len(target.encode("utf-8", "surrogatepass"))


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


class RevocationWrite(enum.Enum):
    """What a store's ``insert_revocation`` did with an entry."""

    INSERTED = "inserted"
    """(level, target) was not present: the entry is stored under a new ``seq``."""
    WIDENED = "widened"
    """Present, and the entry's ``revoked_at`` or ``expires_at`` is later: the stored
    one takes the later of each under a new ``seq``, so readers of the feed see it."""
    UNCHANGED = "unchanged"
    """Present and at least as wide: nothing written, no ``seq`` used."""


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
    on every change of the key set, by one or to the time in seconds, whichever is larger;
    never lowered.
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


def audit_query_time(value: str | None, name: str) -> float | None:
    """An :class:`AuditQuery` bound (``since``, ``until``) from its text: an RFC 3339 time
    with a time zone, as Unix seconds; None when empty. The one reading of the filter, for
    ``/v1/audit/events`` and ``audit export`` from a database alike.

    Raises:
        ValueError: not such a time (the message names ``name``).
    """
    from datetime import datetime

    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} must be an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name} must include a time zone (for example Z)")
    return parsed.timestamp()


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
