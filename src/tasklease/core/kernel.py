"""The authority kernel: lineage, the one issuance check, and commit/deny/audit.

Every credential descends from something: app → launch token → registration (agent
instance) → access token → delegated token → …, with its task and its human principal.
A token carries its lineage in three claims (``core.tokens``): ``lineage`` (the ancestors
whose end ends it: ``app:<app_id>``, for each delegation hop the delegator's grant
id and ``jti``, and on a renewal ``renewal:<grant id>``), ``grant`` (the renewal thread
it continues) and ``max_exp`` (the latest ``exp`` any token of the lineage may have).

Register, renew, resume, delegate and token exchange (``narrow`` in the domain,
``exchange`` from a federated one) all create children through :func:`check_issuance`,
one pure function: it refuses when an ancestor is gone, and otherwise computes the new
token's ``exp``, renewal count, lineage and principal so that nothing grows along a
lineage. The invariants (docs/authority.md):

1. every ancestor is alive: not removed, revoked, released, done or expired, and
   allows the operation (a launch token may switch resumption off);
2. ``exp`` ≤ every ancestor's ceiling (launch ``max_ttl``, registration lifetime
   ceiling, the parent token's ``exp`` and ``max_exp``);
3. the renewal budget is counted on the lineage and never reset;
4. scope, grants (``authorization_details``, ``rules.grants``) and audience only narrow
   (binding: the holder's own, never widened);
5. the delegate is not already in the chain;
6. the human principal reaches every descendant, and so does the attestation (the
   ``attest`` claim: the facts a workload proved at registration, ``rules.attest``);
7. a refusal is a problem with a ``denial_id`` and exactly one audit event
   (:meth:`Kernel.deny`).

Issuance policy (``core.policy``, Cedar) decides who may obtain what among the issuances
these invariants admit: :meth:`Kernel.check_issuance` asks it first for a registration, a
delegation or an exchange (:meth:`Kernel.check_launch` for a launch token), and the
invariants hold whatever it says. Each issuance names the policies that decided it.

An attestation is an ancestor like a launch token: its policy's ceiling is a
:class:`Parent` (``core.attestation``), and a registration with both a launch token and an
attestation descends from both (:func:`joint_parent`: the narrower of each bound). Its
app is an ancestor too: a registration is bounded by the app's scopes and grants as they
are when it registers (:func:`within_app`), not as they were when the launch token was made.

Ending a credential ends its descendants: :func:`ending_records` gives the revocation
entries that release, token-level revocation and a holder's RFC 7009 revocation write.

The free functions named here live in ``core.lineage`` and are re-exported.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tasklease.core.audit import AuditLog
from tasklease.core.auditformat import AuditEntry, clipped, detail_field
from tasklease.core.clock import Clock, ElapsedHorizon
from tasklease.core.config import Config
from tasklease.core.errors import Forbidden, ScopeViolation, TaskleaseError
from tasklease.core.granttypes import GrantTypeRegistry
from tasklease.core.lineage import (
    Refusal,
    agent_lineage,
    app_ancestor,
    app_ids,
    check_issuance,
    ending_records,
    joint_parent,
    refusal_of,
    registration_app,
    registration_ceiling,
    within_app,
)
from tasklease.core.metrics import Metrics
from tasklease.core.policy import Decision, PolicyEngine
from tasklease.core.policyrequest import Actor, PolicyRequest
from tasklease.core.records import (
    AgentRecord,
    AgentSession,
    AppRecord,
    AuditEvent,
    RevocationRecord,
)
from tasklease.core.refusalbudget import charge_refusal
from tasklease.core.revocation import RevocationIndex, ends, matches_by_time
from tasklease.core.spiffe import parse_agent_id
from tasklease.core.store import Store, WriteTx
from tasklease.core.tokenids import TokenIds
from tasklease.core.tokens import Claims
from tasklease.rules import grants as grant_rules
from tasklease.rules.grants import TypeRule
from tasklease.rules.issuance import (
    NEW_HOLDER,
    OPERATIONS,
    Issuance,
    Parent,
    within_ceiling,
)

__all__ = [
    "MAX_RECORDED_PATH",
    "OPERATIONS",
    "Issuance",
    "IssuedToken",
    "Kernel",
    "Parent",
    "Refusal",
    "RequestContext",
    "Service",
    "app_ancestor",
    "check_issuance",
    "denial_entry",
    "ending_records",
    "joint_parent",
    "new_denial_id",
    "read_in_write",
    "recorded_path",
    "refusal_of",
    "with_denial",
    "within_app",
    "within_ceiling",
]

_log = logging.getLogger("tasklease.kernel")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking, for the audit trail, and what the request proves possession of.

    ``request_id``, ``remote`` and ``path`` are never used for an authorization decision;
    ``path`` is the one audit events and refusals record (:func:`recorded_path`).
    ``cert_thumbprint`` (the TLS client certificate's ``x5t#S256``, set by the HTTP layer
    from the connection, never from a header), ``dpop`` (the ``DPoP`` header), ``method``
    and ``url`` (the broker's public origin and the path, for the proof's ``htm``/``htu``)
    are the request's proof-of-possession material (RFC 8705, RFC 9449).
    """

    request_id: str = ""
    remote: str = ""
    path: str = ""
    cert_thumbprint: str = ""
    dpop: str = ""
    method: str = ""
    url: str = ""
    # The template of the route that serves the request (``/v1/admin/apps/{app_id}``): a
    # metric label, which must not grow with what callers send as the path does.
    route: str = ""


MAX_RECORDED_PATH = 512


def recorded_path(path: str) -> str:
    """A request path as the audit trail records it: at most :data:`MAX_RECORDED_PATH`
    characters, a longer one cut and marked ``[truncated]`` (``auditformat.clipped``).

    The path is the caller's, its length too, and refusals record it before anything
    authenticates the caller: the cut bounds what each request can make the broker
    audit. Routes' own paths (ids of at most a few hundred characters) fit whole.
    """
    return clipped(path, MAX_RECORDED_PATH, breaks="/")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: Claims

    @property
    def expires_in(self) -> int:
        return self.claims.exp - self.claims.iat


class _Unread:
    """Not read yet (``Kernel.holder_standing``: the caller has not read the session)."""


_UNREAD = _Unread()


def new_denial_id() -> str:
    """``den_`` and 16 random hex characters: names one audited refusal.

    Each refusal audited is one of its client's budget (``core.refusalbudget``): made
    while a client's request is served, this spends one of that client's tokens.
    """
    charge_refusal()
    return "den_" + secrets.token_hex(8)


def read_in_write(entry: RevocationRecord) -> str:
    """What a refusal's audit detail says of ``entry`` (:meth:`Kernel.revoked_in`)."""
    target = detail_field("target", entry.target)
    return f"revoked at level {entry.level} ({target}, read in the write)"


def with_denial(exc: TaskleaseError, entry: AuditEntry) -> AuditEntry:
    """Give ``exc`` a fresh denial id and return ``entry`` with the id ending its detail.

    The detail is shortened first, so sanitization's length cap can never cut the id off.
    """
    denial_id = new_denial_id()
    exc.denial_id = denial_id
    return denial_entry(entry, denial_id)


def denial_entry(entry: AuditEntry, denial_id: str) -> AuditEntry:
    """``entry`` with ``denial_id`` ending its detail (``| denial=<id>``): how every
    refusal's event names it. The detail is shortened first, so sanitization's length cap
    can never cut the id off."""
    detail = f"{clipped(entry.detail, 1800)} | denial={denial_id}" if entry.detail else ""
    return replace(entry, detail=detail or f"denial={denial_id}")


# Operations issuance policy decides (core.policy); renewal and resumption change nothing,
# and an offline attenuation is checked where it is presented, by the rules alone.
_DECIDED = ("register", "delegate", "exchange", "narrow")
_NEW_HOLDER = NEW_HOLDER


# --- commit, deny, audit, clock ----------------------------------------------------------


class Kernel:
    """The state every service shares: store, audit log, revocation index, clock.

    Services call :meth:`commit` (a state change and its audit events, durable together),
    :meth:`record` (audit only), :meth:`deny` (an audited refusal with a ``denial_id``)
    and :meth:`apply_revocations`; they never write audit events another way.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        revocations: RevocationIndex,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        token_ids: TokenIds | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        # Mints the ``jti`` of every agent token issued here, ids carrying our MAC that a
        # federated peer cannot make up (core.tokenids): replicas share its key, derived
        # from the nonce secret; a kernel made without one mints under a random key.
        self.token_ids = token_ids or TokenIds(secrets.token_bytes(32))
        # What leases are dated by (:meth:`lease_now`): the wall clock, never ahead of the
        # time elapsed since this kernel was made (``monotonic``).
        self._lease_clock = ElapsedHorizon(clock, monotonic=monotonic)
        self.metrics = metrics
        self.revocations = revocations
        self.audit = AuditLog(
            store,
            clock,
            on_batch=metrics.observe_batch,
            on_recovery=metrics.storage_recovery_seconds.observe,
            on_failure=metrics.audit_append_failures.inc,
        )
        self._listeners: tuple[Callable[[], None], ...] = ()
        self._listeners_lock = threading.Lock()
        # Told of every revocation committed here (``Freshness`` follows each until it reads
        # it back from the store).
        self.on_committed: Callable[[Sequence[RevocationRecord]], None] | None = None
        self.started_at = time.monotonic()
        # Issuance policy (core.policy): the tenant's Cedar policies, the default until
        # an adapter gives it a source.
        self.policy = PolicyEngine()
        # Operators' grant types (core.granttypes): their rules and schemas, read from
        # the store when a grant names one.
        self.grant_types = GrantTypeRegistry(store)

    def now(self) -> float:
        return self.clock.now()

    def commit(self, unit: Callable[[WriteTx], Sequence[AuditEntry]]) -> list[AuditEvent]:
        return self._counted(self.audit.commit(unit))

    async def acommit(self, unit: Callable[[WriteTx], Sequence[AuditEntry]]) -> list[AuditEvent]:
        return self._counted(await self.audit.acommit(unit))

    def lease_now(self) -> float:
        """The present a lease between processes is taken, held and dated by: the wall
        clock, never ahead of the time elapsed since this kernel was made. A process whose
        clock jumped ahead must not take a lease it does not hold by the true time, nor
        write one that expires in its clock's future, which no process with a right clock
        could take over until then (the silent-agent sweeper's, the audit checkpoint's,
        the federation feeds' follower's)."""
        return self._lease_clock.now()

    def release_lease(self, name: str, holder: str) -> bool:
        """Give the lease ``name`` up, in a write of its own, if ``holder`` holds it: True
        iff it was given up (``WriteTx.release_lease``).

        Raises:
            Unavailable: the store could not be written (the lease expires as before).
        """
        released: list[bool] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            released.append(tx.release_lease(name, holder))
            return []

        self.commit(unit)
        return released[0]

    def record(self, *entries: AuditEntry) -> list[AuditEvent]:
        """Audit what changed no state (denials, reads): no unit, no savepoint."""
        return self._counted(self.audit.record(*entries))

    async def arecord(self, *entries: AuditEntry) -> list[AuditEvent]:
        return self._counted(await self.audit.arecord(*entries))

    def _counted(self, events: list[AuditEvent]) -> list[AuditEvent]:
        for ev in events:
            self.metrics.audit_events.labels(ev.event_type).inc()
        return events

    def deny(self, exc: TaskleaseError, entry: AuditEntry) -> TaskleaseError:
        """Audit a denial with its precise reason, then hand back the error to raise.

        The error gets a fresh ``denial_id`` (``den_`` + 16 hex), which the caller sees in
        the problem body and which ends the audit detail as ``| denial=<id>``, so an
        operator can find the precise reason for the refusal a caller reports.
        """
        self.record(with_denial(exc, entry))
        return exc

    async def adeny(self, exc: TaskleaseError, entry: AuditEntry) -> TaskleaseError:
        """:meth:`deny` for a coroutine."""
        await self.arecord(with_denial(exc, entry))
        return exc

    async def arecord_denial(self, entry: AuditEntry, denial_id: str) -> None:
        """Audit the one event of refusals named ``denial_id`` already (a run of refusals
        that share one event: ``core.clientlimits``), as :meth:`adeny` audits one."""
        await self.arecord(denial_entry(entry, denial_id))

    def check_issuance(
        self,
        operation: str,
        parent: Parent,
        *,
        holder: str,
        scope: tuple[str, ...],
        iat: int,
        requested_ttl: int,
        dead_ancestor: str = "",
        resource: str | None = None,
        details: tuple[Mapping[str, Any], ...] = (),
        actor: Actor | None = None,
        domain: str = "",
        holder_agent: AgentRecord | None = None,
    ) -> Issuance:
        """The tenant's issuance policy, then :func:`check_issuance` with this broker's
        config, then the lineage it grants checked against the revocation index: an
        ancestor already ended (a chain-level entry on it) makes the issuance impossible,
        rather than a token born dead.

        A registration's parent (its launch token, attestation, or both) is held to the
        current ceiling of every app its lineage names (``app:<app_id>``): an app whose
        scopes or grants were narrowed after it made a launch token (or got an attestor)
        launches no agent beyond the narrower ceiling, and a removed app none at all. It
        may name one app only (:func:`registration_app`): the agent's.

        A registration, delegation or exchange is decided by the policy first
        (``actor`` asks; ``domain`` is the federated domain of an exchange): a denial
        that asked beyond the parent's grants is refused as the invariant refuses it (the
        widening's own error), naming the policy decision too; any other denial is a
        :class:`Refusal` of event type ``policy``. The invariants hold whatever the
        policy allows. ``holder_agent`` is the registration of a delegation's or
        exchange's new holder: the token lists what it descends from (its app, its
        attestation: :func:`agent_lineage`), so that ending either ends the token, and
        is held to its registration's bounds as the holder's own tokens are (the holder
        is an ancestor too): its lifetime ceiling (:func:`registration_ceiling`) and the
        longest lifetime one of its tokens may have (its launch token's ``max_ttl``).
        """
        apps: tuple[AppRecord, ...] = ()
        if operation == "register":
            registration_app(parent)  # one app at most: the one the agent belongs to
            apps, gone = self._apps_of(parent, self.store.get_app)
            dead_ancestor = dead_ancestor or gone
        parent, rules = self._within_apps(parent, apps, details)
        if holder_agent is not None:
            parent = replace(
                parent,
                ceiling=min(parent.ceiling, registration_ceiling(holder_agent, self.config)),
                ttl=min(parent.ttl, holder_agent.token_ttl or self.config.default_ttl),
            )
        decision: Decision | None = None
        try:
            if operation in _DECIDED:
                within = within_ceiling(scope, details, parent.scope, parent.details, rules)
                depth = len(parent.chain_agents) - (0 if operation in _NEW_HOLDER else 1)
                decision = self.policy.decide(
                    PolicyRequest(
                        operation,
                        actor or Actor("Agent", parent.holder or "unknown"),
                        scopes=scope,
                        details=details,
                        ttl=requested_ttl,
                        now=iat,
                        tenant=self.store.tenant,
                        within_ceiling=within,
                        human=parent.principal,
                        depth=max(0, depth),
                        domain=domain,
                    )
                )
                if not decision.allowed:
                    self._policy_refusal(
                        operation,
                        parent,
                        decision,
                        within,
                        holder=holder,
                        scope=scope,
                        iat=iat,
                        requested_ttl=requested_ttl,
                        dead_ancestor=dead_ancestor,
                        resource=resource,
                        details=details,
                        rules=rules,
                    )
            issuance = check_issuance(
                operation,
                parent,
                holder=holder,
                scope=scope,
                iat=iat,
                requested_ttl=requested_ttl,
                config=self.config,
                dead_ancestor=dead_ancestor,
                resource=resource,
                details=details,
                rules=rules,
                # None (unreadable) only for a holder the caller found in no good
                # standing, which ``dead_ancestor`` refuses.
                holder_lineage=(agent_lineage(holder_agent) or ()) if holder_agent else (),
            )
        except Refusal as refusal:
            if apps:  # say what the request was held to: the app's ceiling, as it is now
                refusal.allowed = parent.scope
            raise
        if decision is not None:
            issuance = replace(issuance, decision=decision.audit())
        ended = self.revocations.ended_ancestor(issuance.lineage)
        if ended is not None:
            raise Refusal(
                Forbidden("an ancestor credential has ended"),
                f"ancestor {ended} has ended",
                "denied",
            )
        return issuance

    def held_to_apps(
        self,
        tx: WriteTx,
        parent: Parent,
        scope: tuple[str, ...],
        details: tuple[Mapping[str, Any], ...],
    ) -> str:
        """Why a registration :meth:`check_issuance` admitted is no longer within the apps
        its parent descends from, as its own write transaction reads them, locked ("" when
        it is): an app removed, or narrowed below what it asks, by a change committed
        after the check and before this write. Rule 4 of docs/authority.md, decided
        again on the rows the transaction holds, so the change wins on every replica."""
        if not app_ids(parent.lineage):
            return ""
        apps, gone = self._apps_of(parent, tx.get_app)
        if gone:
            return gone
        held, rules = self._within_apps(parent, apps, details)
        if within_ceiling(scope, details, held.scope, held.details, rules):
            return ""
        return f"its app's ceiling was narrowed meanwhile to {', '.join(held.scope) or '(none)'}"

    def _within_apps(
        self,
        parent: Parent,
        apps: tuple[AppRecord, ...],
        details: tuple[Mapping[str, Any], ...],
    ) -> tuple[Parent, Mapping[str, TypeRule] | None]:
        """``parent`` held to every app's ceiling (:func:`within_app`), and the grant
        types' rules that decide it."""
        ceilings = (d for app in apps for d in app.authorization_details)
        names = {str(d.get("type")) for d in (*details, *parent.details, *ceilings)}
        names.difference_update(grant_rules.BUILTIN_TYPES)
        rules = self.grant_types.rules(names) if names else None
        for app in apps:
            parent = within_app(parent, app, rules)
        return parent, rules

    def _apps_of(
        self, parent: Parent, read: Callable[[str], AppRecord | None]
    ) -> tuple[tuple[AppRecord, ...], str]:
        """The apps a registration's parent descends from, as ``read`` finds them now, and
        why one of them is no longer alive ("" when all are): a registration is held to
        each app's current ceiling, not to the one its launch token or attestor was made
        under."""
        apps = []
        for app_id in app_ids(parent.lineage):
            app = read(app_id)
            if app is None or app.status != "active":
                return (), f"app {app_id} removed"
            apps.append(app)
        return tuple(apps), ""

    def _policy_refusal(
        self,
        operation: str,
        parent: Parent,
        decision: Decision,
        within: bool,
        **request: Any,
    ) -> None:
        """Raise the refusal of an issuance the policy denied: the invariant's own when the
        request went beyond its parent (what it has always answered), else ``policy``."""
        if not within:
            try:
                check_issuance(operation, parent, config=self.config, **request)
            except Refusal as refusal:
                refusal.detail += decision.audit()
                raise
        raise Refusal(
            Forbidden(
                "the issuance is refused by policy",
                hint="the denial_id names the policies that decided it in the audit log",
            ),
            f"policy denied {operation}{decision.audit()}",
            "policy",
        )

    def check_launch(
        self,
        actor: Actor,
        *,
        scope: tuple[str, ...],
        details: tuple[Mapping[str, Any], ...],
        ceiling: tuple[tuple[str, ...], tuple[Mapping[str, Any], ...]] | None,
        ttl: int,
        human: str,
    ) -> Decision:
        """Decide a launch token: ``actor`` (an app or an operator) asks for ``scope`` and
        ``details`` under ``ceiling`` (the app's scopes and grants; None for an operator).

        Raises :class:`Refusal` (event type ``attenuation`` beyond the ceiling, which no
        policy can allow; ``policy`` for another denial).
        """
        names = {str(d.get("type")) for d in details}
        if ceiling is not None:
            names.update(str(d.get("type")) for d in ceiling[1])
        names.difference_update(grant_rules.BUILTIN_TYPES)
        rules = self.grant_types.rules(names) if names else None
        within = ceiling is None or within_ceiling(scope, details, ceiling[0], ceiling[1], rules)
        decision = self.policy.decide(
            PolicyRequest(
                "launch",
                actor,
                scopes=scope,
                details=details,
                ttl=ttl,
                now=int(self.now()),
                tenant=self.store.tenant,
                within_ceiling=within,
                human=human,
            )
        )
        if not within:
            raise Refusal(
                ScopeViolation("requested scopes exceed app ceiling"),
                f"ceiling would widen{decision.audit()}",
                "attenuation",
            )
        if not decision.allowed:
            raise Refusal(
                Forbidden(
                    "the launch token is refused by policy",
                    hint="the denial_id names the policies that decided it in the audit log",
                ),
                f"policy denied launch{decision.audit()}",
                "policy",
            )
        return decision

    def revocation_entry(
        self, level: str, target: str, *, at: float | None = None
    ) -> RevocationRecord:
        """The entry that revokes ``target`` at ``level`` now: every revocation an operator,
        the sweeper or a change of credential makes is dated here, inside the write that
        stores it (``at``: the time that write already read from :meth:`now`).

        ``revoked_at`` is this clock's second, and for an entry that matches by a time
        (``revocation.matches_by_time``: agent, task, chain on an agent) ``clock_skew``
        more: what it is compared with (a registration's ``oiat``, a token's ``iat``, a
        hop's ``delegated_at``) was read from the clock of the process that made it, up to
        ``clock_skew`` ahead of this one (another replica; this one before a step back).
        Dated by this clock alone, an entry would miss what such a clock made in the
        moments before it, for good: the revocation would answer 200 and the tokens live
        on. It is never earlier than this clock's second, so the store's widening (the
        later of two) and the feed's readers need nothing new. What is made for the
        target within ``clock_skew`` after the entry is ended too, so issuing it is
        refused until then (:meth:`reissue_wait`). docs/decisions.md 142.
        """
        revoked_at = math.floor(self.now() if at is None else at)
        if matches_by_time(level, target):
            revoked_at += self.config.clock_skew
        return RevocationRecord(level, target, revoked_at, self.revocation_expiry(revoked_at))

    def reissue_wait(self, level: str, target: str, iat: int, tx: WriteTx | None = None) -> int:
        """Seconds until what is issued for ``target`` at ``iat`` is past this process's
        entry at ``level`` on it (0 when there is none, or ``iat`` is past it already): a
        sign-in or a registration made now would be born revoked, so it is refused and
        asked to come back then (:meth:`revocation_entry`).

        With ``tx``, the issuance's own write, the entry as that transaction sees it counts
        too: one another replica committed that this process has not applied yet (its
        notification on its way) asks to come back as one written here does, rather than
        letting a token be issued, and audited as issued, that the entry ends on arrival
        (a sign-in with the new secret right after a rotation elsewhere). docs/decisions.md
        287, 296."""
        stored = tx.find_revocation(level, target) if tx is not None else None
        return self._wait_past(level, target, iat, stored)

    def _wait_past(self, level: str, target: str, iat: int, stored: RevocationRecord | None) -> int:
        """:meth:`reissue_wait`'s answer from this process's entry and ``stored``, the one
        the write read (the later of the two counts)."""
        revoked_at = self.revocations.revoked_at(level, target)
        if stored is not None and (revoked_at is None or stored.revoked_at > revoked_at):
            revoked_at = stored.revoked_at
        return 0 if revoked_at is None or iat > revoked_at else revoked_at + 1 - iat

    def reissue_wait_or_revoked_in(
        self,
        tx: WriteTx,
        issued: Claims,
        *,
        wait_on: tuple[str, str],
        iat: int,
        read: Collection[tuple[str, str]] = (),
    ) -> tuple[int, RevocationRecord | None]:
        """:meth:`reissue_wait` on ``wait_on`` and then :meth:`revoked_in` on every other
        key, read in one lookup (one round trip on PostgreSQL): a registration waits on its
        task's entry, a delegation on its delegator's chain entry. ``(wait, None)`` when
        the wait applies (it is asked first, as each caller's refusal for it keeps what a
        second attempt needs), else ``(0, the entry that ends issued or None)``."""
        keys = RevocationIndex.keys(issued) - {("token", issued.jti), wait_on, *read}
        found = tx.find_revocations(sorted({*keys, wait_on}))
        stored = next((r for r in found if (r.level, r.target) == wait_on), None)
        wait = self._wait_past(*wait_on, iat, stored)
        if wait:
            return wait, None
        return 0, self._first_ending([r for r in found if (r.level, r.target) != wait_on], issued)

    def revoked_in(
        self, tx: WriteTx, issued: Claims, *, read: Collection[tuple[str, str]] = ()
    ) -> RevocationRecord | None:
        """The entry, as ``tx`` reads it, that ends ``issued`` at birth (None when there is
        none): what a registration, renewal, resumption, delegation or exchange is about to
        write. One another replica committed that this process has not applied yet (its
        notification on its way) ends it on arrival, as one written here does; the
        issuance's checks read this process's index, so without this it would be answered
        and audited as made, and ended moments later (decision 353's rule, for every entry
        that could end what is issued: the holder's, its task's, each delegator's and
        their tasks', each lineage ancestor's).

        Every ``(level, target)`` the index could match ``issued`` by
        (:meth:`RevocationIndex.keys`) is read, one lookup on the unique key each (in one
        statement on PostgreSQL: one round trip), and matched by the index's own rule
        (:meth:`RevocationIndex.match`); but the token
        entry on its own ``jti`` (new and random: nothing names it yet) and ``read``, what
        the caller read in this write already (:meth:`reissue_wait`) or cannot have an
        entry (a registration's new, random SPIFFE ID). docs/decisions.md 367."""
        keys = sorted(RevocationIndex.keys(issued) - {("token", issued.jti), *read})
        return self._first_ending(tx.find_revocations(keys) if keys else [], issued)

    def _first_ending(
        self, found: Sequence[RevocationRecord], issued: Claims
    ) -> RevocationRecord | None:
        """The first of ``found``, by level and target, in force and ending ``issued``."""
        now = self.now()
        for record in sorted(found, key=lambda r: (r.level, r.target)):
            if record.expires_at > now and ends(record, issued):
                return record
        return None

    def revocation_expiry(self, revoked_at: float) -> float:
        """When an operator's entry made at ``revoked_at`` can no longer matter.

        Tokens live at most ``max_ttl``; but an agent- or task-level entry also keeps the
        agents it names from resuming or receiving delegations (:meth:`agent_standing`),
        which they could until their registration's lifetime ceiling, and an entry on a
        launch token's creator ends the launch tokens it made before (up to
        ``launch_token_max_ttl``: ``core.registrationinputs``). So it lives until all
        have passed: pruning it earlier would re-arm a revoked task or launch token.
        """
        cfg = self.config
        longest = max(cfg.max_ttl, cfg.renewal_ceiling, cfg.launch_token_max_ttl)
        return revoked_at + longest + cfg.clock_skew + 1

    def apply_revocations(self, records: Sequence[RevocationRecord], *, read: bool = False) -> None:
        """Enforce committed revocations in this process and wake the feed's listeners.

        ``read``: read from the store (``Freshness``); otherwise committed here, and
        :attr:`on_committed` is told."""
        self.revocations.apply(records)
        if not read and self.on_committed is not None:
            self.on_committed(records)
        self.metrics.revocations_held(self.revocations, len(self.revocations))
        self.wake_listeners()

    def wake_listeners(self) -> None:
        """Call every listener (:meth:`add_listener`), as after a batch of revocations."""
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001 - a subscriber must never undo a revocation
                _log.exception("revocation listener failed")

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every batch of revocations; returns its remover."""
        with self._listeners_lock:
            self._listeners = (*self._listeners, listener)

        def remove() -> None:
            with self._listeners_lock:
                self._listeners = tuple(o for o in self._listeners if o is not listener)

        return remove

    # --- ancestors' standing ---------------------------------------------------------

    def holder_standing(
        self, claims: Claims, session: AgentSession | _Unread | None = _UNREAD
    ) -> str:
        """Why the agent holding the validated token ``claims`` may not renew it or hand
        it on ("" when it may): :meth:`agent_standing` without the lifetime ceiling (the
        token's own ceilings bound it).

        For its own token (no delegation chain) validation has already refused what
        would end the agent (its revocation, its task's, its app's end: the token is
        theirs), so only the session is read (``session``, when the caller has read it):
        released (done) or swept. A delegated token carries its delegator's task and
        lineage, so its holder's own standing is read whole.
        """
        return self.holder(claims, session)[1]

    def holder(
        self, claims: Claims, session: AgentSession | _Unread | None = _UNREAD
    ) -> tuple[AgentRecord | None, str]:
        """:meth:`holder_standing`, with the holder's registration when it was read (for
        a delegated token; None for the holder's own token, whose lineage names its app
        and attestation first: :func:`tasklease.core.policyrequest.agent_actor`)."""
        if claims.delegation_chain:
            return self.agent_standing(claims.sub, lifetime=False)
        found = (
            self.store.get_agent_session(claims.sub) if isinstance(session, _Unread) else session
        )
        if found is not None and found.state != "active":
            return None, f"agent session is {found.state}"
        return None, ""

    def agent_standing(
        self, agent_id: str, *, lifetime: bool = True
    ) -> tuple[AgentRecord | None, str]:
        """``(record, "")`` for a registered agent in good standing, else ``(record, why)``.

        Good standing: registered, within its registration's lifetime ceiling, status
        ``active``, not matched by an agent- or task-level revocation since it registered,
        its session neither released nor swept, and its app (if any) not removed.
        ``lifetime=False`` leaves the ceiling to the caller (a resumption's issuance check
        refuses it with its own error).
        """
        agent = self.store.get_agent(agent_id) if parse_agent_id(agent_id) else None
        if agent is None:
            return None, "agent not registered"
        return agent, self.standing(agent, self.store.get_agent_session, lifetime=lifetime)

    def standing(
        self,
        agent: AgentRecord,
        session: Callable[[str], AgentSession | None],
        *,
        lifetime: bool = True,
        app_standing: Callable[[str], str] | None = None,
    ) -> str:
        """Why ``agent`` is not in good standing ("" when it is), as :meth:`agent_standing`
        says; ``session`` reads its session (only once the cheaper checks passed), and
        ``app_standing`` its app's standing (default :meth:`app_standing`)."""
        if lifetime and self.now() >= registration_ceiling(agent, self.config):
            return "agent registration past its lifetime ceiling"
        if agent.status != "active":
            return f"agent is {agent.status}"
        lineage = agent_lineage(agent)
        if lineage is None:
            return "agent's attestation record is unreadable"
        level = self.revocations.match(_Probe(agent, lineage))
        if level is not None:
            return f"agent revoked at level {level}"
        found = session(agent.agent_id)
        if found is not None and found.state != "active":
            return f"agent session is {found.state}"
        return (app_standing or self.app_standing)(agent.app_id)

    def app_standing(self, app_id: str) -> str:
        """ "" when ``app_id`` is empty (admin-launched) or an active app, else why not."""
        if not app_id:
            return ""
        app = self.store.get_app(app_id)
        if app is None or app.status != "active":
            return f"app {app_id} removed"
        return ""


class Service:
    """A capability built on the kernel (registration, renewal, …): what every service
    reads of the kernel, named once."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._config = kernel.config
        self._store = kernel.store
        self._metrics = kernel.metrics


@dataclass(frozen=True, slots=True)
class _Probe:
    """Stands for an agent's first token in the revocation index: matched by any agent-
    or task-level revocation made since it registered, and by a chain-level one on what
    its registration descends from (its app, its attestation: ``lineage``)."""

    agent: AgentRecord
    lineage: tuple[str, ...]

    @property
    def jti(self) -> str:
        return ""

    @property
    def sub(self) -> str:
        return self.agent.agent_id

    @property
    def iat(self) -> int:
        return math.floor(self.agent.registered_at)

    @property
    def task_id(self) -> str:
        return self.agent.task_id

    @property
    def delegation_chain(self) -> tuple[()]:
        return ()
