"""Revocation: by operators at four levels, by a token's holder (RFC 7009), the feed that
carries revocations to resource servers' verifiers, pruning what can match no more, and
writing back what a store that went back in time lost.

A revocation is written to the store first (durable), then applied to this process's
index (enforced at once), then published (the feed's listeners, other replicas through
the store). Revocation is idempotent, and ending a token ends its descendants.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

from tasklease.core.auditformat import AuditEntry, clipped, detail_field, reason_text
from tasklease.core.callers import about
from tasklease.core.clockoffset import measure_offset
from tasklease.core.delegation import principal_ref
from tasklease.core.errors import Forbidden, InvalidRequest
from tasklease.core.feedcursor import FeedPage, fingerprint
from tasklease.core.horizon import SafeHorizon
from tasklease.core.kernel import Kernel, RequestContext, Service
from tasklease.core.lineage import ending_records
from tasklease.core.pending import Pending, complete
from tasklease.core.records import MAX_TARGET, RevocationRecord, RevocationWrite, target_size
from tasklease.core.revocation import LEVELS
from tasklease.core.spiffe import is_spiffe_id, parse_agent_id
from tasklease.core.store import WriteTx
from tasklease.core.tokencheck import TokenCheck, held_scopes
from tasklease.core.tokens import KIND_AGENT, OPERATOR_JTI_PREFIX, OPERATORS_SCOPE, Claims
from tasklease.core.validation import TokenRejected
from tasklease.rules.principals import creator_kind
from tasklease.rules.scopes import is_subset
from tasklease.rules.secretshapes import holds_credential, holds_secret

__all__ = ["Revoking", "revocation_request", "unrevocable"]

_log = logging.getLogger("tasklease.broker")
# Subjects of operators' tokens: the built-in admin's and ``operator:<name>``.
_OPERATOR_KINDS = ("admin", "operator")


def unrevocable(level: str, target: str) -> str:
    """Why no revocation may name ``target`` at ``level``; "" when one may.

    ``"long"``: longer than :data:`MAX_TARGET` (in UTF-8 bytes, ``records.target_size``).
    ``"spiffe"``: a SPIFFE ID not written as the specification (and every token) writes
    it, which no token could match.
    ``"credential"``: shaped like a token
    (a pasted credential would be stored, audited and published on the feed every
    resource server reads, and revoke nothing). ``"secret"``: shaped like one of our
    secrets, unless it is a public id that may be shaped like anything (a SPIFFE ID, an
    id a federated domain chose, an attestation ancestor: the subject an identity
    provider chose; refused, it could not be revoked here at all). What puts an id in a
    token's lineage checks it here first, so that every ancestor can be revoked.
    """
    if target_size(target) > MAX_TARGET:
        return "long"
    if (level == "token" and target.count(".") == 2) or holds_credential(target):
        return "credential"
    if holds_secret(target) and not target.startswith(("spiffe://", "fed:", "attest:")):
        return "secret"
    if target[: len("spiffe://")].lower() == "spiffe://" and not is_spiffe_id(target):
        # Tokens name SPIFFE IDs as the specification writes them; an entry on another
        # spelling (``SPIFFE://``, an uppercase trust domain) would be written, answered
        # and published, and match nothing.
        return "spiffe"
    return ""


def revocation_request(level: object, target: object) -> tuple[str, str]:
    """``level`` and ``target`` as a revocation may name them (the one check, for the
    admin API and the console's confirmation page alike); each refusal says what is wrong.

    Raises:
        InvalidRequest: no level or no target, a level not one of :data:`LEVELS`, a target
            :func:`unrevocable` refuses.
    """
    if not isinstance(level, str) or not level or not isinstance(target, str) or not target:
        raise InvalidRequest("level and target are required")
    if level not in LEVELS:
        raise InvalidRequest(
            f"invalid revocation level: {clipped(level, 32)}",
            hint="use token, agent, task or chain",
        )
    why = unrevocable(level, target)
    if why == "long":
        raise InvalidRequest("target is too long")
    if why == "credential":
        raise InvalidRequest(
            "target must be a token id (jti), not a token",
            hint="read the jti with `tasklease token inspect`",
        )
    if why == "secret":
        raise InvalidRequest(
            "target must not hold a secret (64 hexadecimal characters: a launch token "
            "or a client secret)",
            hint="revocation targets are ids; a launch token ends when it expires or is "
            "used up, an app's secret when the app is deregistered",
        )
    if why == "spiffe":
        raise InvalidRequest(
            "target is not a SPIFFE ID as tokens name it",
            hint="the scheme and the trust domain are lowercase "
            "(spiffe://example.org/...), and no path segment is empty, . or ..",
        )
    return level, target


def ended_by_holder(kernel: Kernel, claims: Claims, entry: AuditEntry, label: str) -> Pending[None]:
    """The token of ``claims`` and what descends from it ended by its own holder (a
    release, a sign-out): the revocation entries of ``lineage.ending_records`` and the one
    event ``entry``, written together; ``label`` counts it in ``tokens_revoked``."""
    records = ending_records(claims, int(kernel.now()), kernel.config)

    def unit(tx: WriteTx) -> list[AuditEntry]:
        for record in records:
            tx.insert_revocation(record)
        return [entry]

    def done() -> None:
        kernel.apply_revocations(records)
        kernel.metrics.tokens_revoked.labels(label).inc()

    return Pending(unit, done)


def _names_operator(level: str, target: str) -> bool:
    """Whether revoking ``target`` at ``level`` ends operators' tokens: their subject (at
    level agent or chain), or one of their ids (``op-...``, at level token or chain)."""
    if level in ("agent", "chain") and creator_kind(target) in _OPERATOR_KINDS:
        return True
    return level in ("token", "chain") and target.startswith(OPERATOR_JTI_PREFIX)


class Revoking(Service):
    """Revoke, revoke a held token, read the feed, prune, write back what a store lost.
    Thread-safe; one per broker."""

    def __init__(self, kernel: Kernel, tokens: TokenCheck, horizon: SafeHorizon) -> None:
        super().__init__(kernel)
        self._tokens = tokens
        self._horizon = horizon

    def revoke(self, claims: Claims, *, level: object, target: object, ctx: RequestContext) -> int:
        """Revoke at ``token`` (a jti), ``agent`` (a subject), ``task`` or ``chain`` level.

        Idempotent; durable before it returns; enforced by this process at once.
        """
        return complete(
            self._kernel, self.prepare_revoke(claims, level=level, target=target, ctx=ctx)
        )

    def prepare_revoke(
        self, claims: Claims, *, level: object, target: object, ctx: RequestContext
    ) -> Pending[int]:
        """:meth:`revoke` checked, not yet written (``core.pending``)."""
        level, target = revocation_request(level, target)
        if _names_operator(level, target) and not is_subset(
            (OPERATORS_SCOPE,), held_scopes(claims)
        ):
            # An operator's (or the built-in admin's) sessions are ended by removing or
            # rotating it, which needs the admin role; an operator holding only the
            # revoke scope could otherwise sign the admins out, again and again.
            raise self._kernel.deny(
                Forbidden(
                    "ending an operator's tokens needs the admin role",
                    hint="remove the operator or rotate its secret",
                ),
                replace(
                    about(claims),
                    event_type="token_revocation_denied",
                    outcome="denied",
                    request_id=ctx.request_id,
                    detail=f"caller={claims.sub} may not revoke level={level} "
                    f"{detail_field('target', target)}: it ends operators' tokens, which needs "
                    f"{OPERATORS_SCOPE}",
                ),
            )
        named = self._named(level, target)
        records: list[RevocationRecord] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            # Timed in its write, not when it was checked: a delegation or registration
            # that committed before it was made by then, and is matched (agent, task and
            # chain entries match what was made at or before ``revoked_at``, which the
            # kernel dates to cover every clock within the skew: decision 142).
            now = self._kernel.now()
            records[:] = [self._kernel.revocation_entry(level, target, at=now)]
            if level == "token":
                # A token's end is its descendants' end (they list its jti in their lineage).
                records.append(self._kernel.revocation_entry("chain", target, at=now))
            for record in records:
                tx.insert_revocation(record)
            if level == "agent" and parse_agent_id(target):
                tx.set_agent_status(target, "revoked")
            return [
                replace(
                    named,
                    event_type="token_revoked",
                    request_id=ctx.request_id,
                    detail=f"revoked at level={level} {detail_field('target', target)} "
                    f"by={claims.sub}",
                )
            ]

        def done() -> int:
            self._kernel.apply_revocations(records)
            self._metrics.tokens_revoked.labels(level).inc()
            return 1

        return Pending(unit, done)

    def _named(self, level: str, target: str) -> AuditEntry:
        """The audit event's ids for a revocation's target, so that filters find it: the
        task (``task_id``) for a task; the agent, with its task and orchestrator, for an
        agent or a chain root; nothing for a token (its ``jti`` is in the detail)."""
        if level == "task":
            return AuditEntry("", task_id=target)
        if level in ("agent", "chain") and parse_agent_id(target):
            agent = self._store.get_agent(target)
            if agent is not None:
                session = self._store.get_agent_session(target)
                return AuditEntry(
                    "",
                    agent_id=target,
                    task_id=agent.task_id,
                    orch_id=agent.orch_id,
                    app_id=agent.app_id,
                    principal_ref=principal_ref(session.principal)
                    if session is not None and session.principal
                    else "",
                )
            return AuditEntry("", agent_id=target)
        if level == "agent":  # an operator's or an app's subject (operator:<name>, app:<id>)
            return AuditEntry("", agent_id=target)
        return AuditEntry("")

    def revoke_token(
        self, caller: Claims, *, token: object, token_type_hint: object, ctx: RequestContext
    ) -> bool:
        """RFC 7009 revocation by a token holder; True iff something was revoked.

        The caller authenticated with an agent token (with its binding proof, if bound);
        the token to revoke must be one of the same agent's (``sub``), or the same token.
        Idempotent; a token that is unknown, malformed, expired or already revoked is not
        an error (RFC 7009 section 2.2: the answer is 200 either way); the attempt is
        audited. ``token_type_hint`` is only a hint (section 2.1): both forms are tried.
        A valid token of another agent is refused (403, audited).

        Raises:
            InvalidRequest: ``token`` missing or not a string (400, RFC 7009 section 2.2.1).
            Forbidden: the token belongs to another agent.
        """
        return complete(
            self._kernel,
            self.prepare_revoke_token(
                caller, token=token, token_type_hint=token_type_hint, ctx=ctx
            ),
        )

    def prepare_revoke_token(
        self, caller: Claims, *, token: object, token_type_hint: object, ctx: RequestContext
    ) -> Pending[bool]:
        """:meth:`revoke_token` checked, not yet written (``core.pending``); an ignored
        revocation's event is an audit-only record (deferred like a denial)."""
        if not isinstance(token, str) or not token:
            raise InvalidRequest("missing required field: token")
        if token_type_hint is not None and not isinstance(token_type_hint, str):
            raise InvalidRequest("token_type_hint must be a string")
        ids = replace(about(caller), request_id=ctx.request_id, resource=ctx.path)
        try:
            target = self._tokens.verify(token, (KIND_AGENT,), any_audience=True)
        except TokenRejected as exc:
            entry = replace(
                ids,
                event_type="token_revocation_ignored",
                detail="RFC 7009 revocation of an inactive token ignored: "
                f"{reason_text(exc.reason)}",
            )
            self._kernel.record(entry)
            return Pending(None, _false)
        if target.sub != caller.sub:
            raise self._kernel.deny(
                Forbidden(
                    "the token does not belong to the caller",
                    # RFC 7009 section 2.1: not issued to the caller (RFC 6749 section 5.2).
                    oauth_error="unauthorized_client",
                ),
                replace(
                    ids,
                    event_type="token_revocation_denied",
                    outcome="denied",
                    detail=f"caller={caller.sub} may not revoke a token of {target.sub} "
                    f"jti={target.jti}",
                ),
            )
        records = ending_records(target, int(self._kernel.now()), self._config)

        def unit(tx: WriteTx) -> list[AuditEntry]:
            for record in records:
                tx.insert_revocation(record)
            return [
                replace(
                    ids,
                    event_type="token_revoked",
                    detail=f"revoked by its holder (RFC 7009) level=token target={target.jti} "
                    f"by={caller.sub} self={target.jti == caller.jti}",
                )
            ]

        def done() -> bool:
            self._kernel.apply_revocations(records)
            self._metrics.tokens_revoked.labels("holder").inc()
            return True

        return Pending(unit, done)

    def end_session(self, claims: Claims, *, ctx: RequestContext) -> None:
        """End an operator's own token (the console's sign-out), so a copy of it, the
        session cookie's, stops working at once rather than at its ``exp``. Any operator
        may end its own token; ``claims`` were authenticated by the caller. Durable
        before it returns."""
        entry = replace(
            about(claims),
            event_type="token_revoked",
            request_id=ctx.request_id,
            detail=f"signed out: level=token target={claims.jti} by={claims.sub}",
        )
        complete(self._kernel, ended_by_holder(self._kernel, claims, entry, "holder"))

    def revocation_feed(self, cursor: int | None, anchor: str | None = None) -> FeedPage:
        """Revocation entries in ``seq`` order and the cursor to continue from.

        Without a cursor (or 0): a snapshot of every unexpired entry. With one: the
        unexpired entries whose ``seq`` is greater. The page's cursor is the greatest
        ``seq`` returned, or the given cursor when nothing is new; its ``anchor`` the
        fingerprint of the entry at it (``core.feedcursor``). With an ``anchor``, the
        feed continues only while the store holds that same entry at ``cursor``: after the
        database went back in time (a failover to a standby that missed the last commits,
        a restore) the numbers past its last are handed out again, and reading on from
        ``cursor`` would skip the entries numbered again below it for good. Otherwise (or
        for a bare cursor past the store's last revocation, as before anchors) the answer
        is a snapshot, ``restarted``, with a cursor the reader must take, smaller or not.
        An entry that is widened comes again with a new ``seq``, so a reader whose anchor
        was widened gets a snapshot too. Unexpired by the safe horizon
        (``core.horizon``), so a wall clock jumped ahead leaves no entry out.
        """
        now = self._horizon.now()
        if cursor:
            # The entry at the cursor comes back with what follows it, in the same read.
            read = self._store.revocations_since(cursor - 1)
            at = read[0] if read and read[0].seq == cursor else None
            if anchor is not None:
                held = at is not None and fingerprint(at) == anchor
            else:
                # A bare cursor (a reader from before anchors): only a store whose last
                # number is below it shows that the database went back.
                held = cursor <= self._store.revocation_high_water()
            if held:
                fresh = [r for r in read if r.seq > cursor and r.expires_at > now]
                if fresh:
                    return FeedPage(fresh, fresh[-1].seq, fingerprint(fresh[-1]))
                return FeedPage([], cursor, "" if at is None else fingerprint(at))
            _log.warning(
                "a revocation feed cursor (%d) does not name the store's entry at it: the "
                "database went back in time, or the entry was widened or pruned; "
                "answering with a snapshot",
                cursor,
            )
        records = self._store.load_revocations(now)
        if not records:
            return FeedPage([], 0, "", restarted=bool(cursor))
        return FeedPage(records, records[-1].seq, fingerprint(records[-1]), restarted=bool(cursor))

    def prune(self) -> int:
        """Drop revocation entries, nonces and launch tokens nothing can use any more.

        Against the safe horizon, not the wall clock (``core.horizon``): an entry is
        dropped only once its tokens are dead by every clock the broker may return to.
        """
        tick = self._horizon.tick()
        measure_offset(
            self._kernel.clock, self._store.server_time, self._metrics, self._config.clock_skew
        )
        removed = self._kernel.revocations.prune(tick.point)
        removed_rows = self._store.prune(tick.point)
        self._metrics.revocations_held(self._kernel.revocations, len(self._kernel.revocations))
        self._metrics.prune_horizon_lag.set(tick.lag)
        _log.debug("pruned %d index entries and %d rows", removed, removed_rows)
        return removed

    def write_back(self, lost: list[RevocationRecord]) -> int:
        """Store again the entries of ``lost`` (``Freshness.lost``: held here, no longer in
        the store after it went back in time) that can still match a valid token; return
        how many were written.

        Each goes through ``insert_revocation`` under a new ``seq``: an entry another
        replica wrote back first, or that was revoked again since, is left as it is, so
        replicas holding the same entries write each once. One ``revocations_restored``
        event says what was written; nothing written, no event.
        """
        now = self._horizon.now()
        due = [record for record in lost if record.expires_at > now]
        written: list[RevocationRecord] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            written.clear()  # a unit may run again when its batch is retried
            for record in due:
                if tx.insert_revocation(record) is not RevocationWrite.UNCHANGED:
                    written.append(record)
            if not written:
                return []
            levels = Counter(record.level for record in written)
            counts = ", ".join(f"{level} {levels[level]}" for level in LEVELS if level in levels)
            return [
                AuditEntry(
                    "revocations_restored",
                    detail=(
                        f"{len(written)} revocation entries the database lost (it went back "
                        f"in time) written again from this process's index: {counts}"
                    ),
                )
            ]

        if due:
            self._kernel.commit(unit)
        if written:
            _log.warning(
                "wrote back %d revocation entries the store had lost (audited as "
                "revocations_restored)",
                len(written),
            )
        return len(written)


def _false() -> bool:
    return False
