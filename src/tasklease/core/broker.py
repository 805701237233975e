"""The Broker: one method per credential operation, and the only place that audits.

HTTP handlers, the CLI and tests call these methods; none of them writes audit events or
touches storage itself. Every method either completes with its state change and audit
event durable together, or raises a :class:`~tasklease.core.errors.TaskleaseError`
(after auditing the denial, where there is a caller to attribute it to).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nacl.signing

from tasklease.core import discovery, liveness, mutual
from tasklease.core import scopes as scope_rules
from tasklease.core.assurance import is_critical, live_denial
from tasklease.core.audience import (
    choose_audience,
    narrow_audience,
    validate_resource,
    validate_resources,
)
from tasklease.core.audit import AuditEntry
from tasklease.core.binding import BindingError, DPoPVerifier, Presentation, check_binding
from tasklease.core.clock import Clock, SystemClock, format_rfc3339, format_rfc3339_seconds
from tasklease.core.config import Config
from tasklease.core.delegation import (
    principal_ref,
    record_signing_input,
    validate_principal,
    verify_chain_records,
)
from tasklease.core.errors import (
    Forbidden,
    InsufficientScope,
    InvalidRequest,
    InvalidTarget,
    InvalidTTL,
    NotFound,
    TaskleaseError,
    Unauthorized,
    Unavailable,
)
from tasklease.core.identity import (
    NonceIssuer,
    decode_public_key,
    decode_signature,
    nonce_hash,
    verify_possession,
)
from tasklease.core.introspection import (
    INACTIVE,
    claims_from_reference,
    introspection_response,
    is_reference_token,
    new_reference,
    reference_hash,
)
from tasklease.core.kernel import (
    IssuedToken,
    Kernel,
    Parent,
    Refusal,
    RequestContext,
    app_ancestor,
    check_issuance,
    ending_records,
    new_denial_id,
    with_denial,
)
from tasklease.core.keys import KeyRing, load_or_create_keyring, rotate_key
from tasklease.core.launch import LAUNCH_TOKEN_PATTERN, launch_token_hash, new_launch_token
from tasklease.core.liveness import new_session
from tasklease.core.metrics import Metrics
from tasklease.core.passwords import hash_secret, new_secret, verify_secret
from tasklease.core.revocation import LEVELS, RevocationIndex
from tasklease.core.spiffe import new_agent_id, parse_agent_id, validate_segment
from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AppRecord,
    AuditEvent,
    AuditQuery,
    DiscoveryBinding,
    LaunchTokenRecord,
    ReferenceTokenRecord,
    RevocationRecord,
    Store,
    WriteTx,
)
from tasklease.core.tokens import (
    ADMIN_SCOPES,
    APP_SCOPES,
    KIND_ADMIN,
    KIND_AGENT,
    KIND_APP,
    Claims,
    ClaimsError,
    DelegationRecord,
    agent_key_of,
    mint,
)
from tasklease.core.validation import TokenRejected, Validator

__all__ = ["ALL_KINDS", "VERSION", "Broker", "IssuedToken", "RequestContext", "expires_at_text"]

VERSION = "0.1.0"
ALL_KINDS = frozenset({KIND_AGENT, KIND_ADMIN, KIND_APP})
_APP_NAME = re.compile(r"^[a-z][a-z0-9]+(?:-[a-z0-9]+)*$")
_log = logging.getLogger("tasklease.broker")
_FEED_READER_KINDS = frozenset({KIND_ADMIN, KIND_APP})
# How often a store watch checks in (confirms the revocation index is current).
_WATCH_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class PendingRegistration:
    """A registration checked and signed, or refused, and not yet written.

    :meth:`Broker.prepare_register` returns it without writing anything;
    :meth:`Broker.complete_register` writes ``unit`` (the registration, or for a failed
    proof of possession only the spent nonce) or the audit-only ``denial``, then raises
    ``refusal`` or answers ``issued``.
    """

    unit: Callable[[WriteTx], Sequence[AuditEntry]] | None
    issued: IssuedToken | None
    base: AuditEntry  # the denial entry, should the commit refuse (nonce or token spent)
    started: float  # perf_counter at the start, for the issuance histogram
    refusal: TaskleaseError | None = None
    denial: AuditEntry | None = None


class _Refused(Exception):
    """Raised inside a deferred registration: what to write, then the error to raise."""

    def __init__(
        self,
        error: TaskleaseError,
        *,
        denial: AuditEntry | None = None,
        unit: Callable[[WriteTx], Sequence[AuditEntry]] | None = None,
    ) -> None:
        super().__init__(error.code)
        self.error = error
        self.denial = denial
        self.unit = unit


def _about(claims: Claims) -> AuditEntry:
    """The identifying fields of an audit entry about the holder of ``claims``."""
    return AuditEntry("", agent_id=claims.sub, task_id=claims.task_id, orch_id=claims.orch_id)


def _cnf_of(claims: Claims) -> dict[str, str] | None:
    cnf = claims.raw.get("cnf")
    return dict(cnf) if isinstance(cnf, dict) and cnf else None


def _binding_suffix(claims: Claims, reference: ReferenceTokenRecord | None) -> str:
    """Audit detail: which binding and form a freshly issued token has."""
    out = ""
    cnf = _cnf_of(claims)
    if cnf:
        out += " cnf=" + ",".join(sorted(cnf))
    if claims.aud:
        out += " aud=" + ",".join(claims.aud)
    if reference is not None:
        out += " by_reference=true"
    return out


def _no_change(_tx: WriteTx) -> list[AuditEntry]:
    return []


def _defer_denial(exc: TaskleaseError, entry: AuditEntry) -> Exception:
    """A denial to be audited later, by whoever completes the operation (see _Refused)."""
    return _Refused(exc, denial=with_denial(exc, entry))


def _fmt(values: Sequence[str]) -> str:
    return "[" + " ".join(values) + "]"


class Broker:
    """The credential broker's operations. Thread-safe; share one per process."""

    def __init__(
        self,
        config: Config,
        store: Store,
        keyring: KeyRing,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        nonce_secret: bytes | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.keyring = keyring
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.revocations = RevocationIndex()
        self.kernel = Kernel(config, store, self.clock, self.metrics, self.revocations)
        self.audit = self.kernel.audit
        self._rotation_lock = threading.Lock()
        self._known_key_files = self._key_files()
        self.validator = Validator(config, keyring, self.clock, self.revocations)
        self.dpop = DPoPVerifier(config.dpop_proof_window, capacity=config.dpop_replay_cache_size)
        # Replicas that share a database must share this secret (server.build_broker
        # keeps it beside the signing keys); a lone in-process broker may use a random one.
        self.nonces = NonceIssuer(nonce_secret or os.urandom(32), config.nonce_ttl)
        self.started_at = self.kernel.started_at
        # Names this process as the holder of store leases (the liveness sweeper's).
        self.instance_id = secrets.token_hex(8)
        # Revocation freshness: the monotonic time after which the index can no longer be
        # trusted to hold every revocation other replicas committed. Infinite unless a
        # store watch runs (watch_revocations); each confirmed check-in pushes it on.
        self._current_until = math.inf
        self._monotonic: Callable[[], float] = time.monotonic
        self._watch: Any = None
        self.revocations.apply(store.load_revocations(self.clock.now()))
        self.metrics.revocation_entries.set(len(self.revocations))

    # --- helpers --------------------------------------------------------------------

    def _ttl(self, requested: int | None, default: int) -> int:
        ttl = default if requested is None or requested <= 0 else requested
        return min(ttl, self.config.max_ttl)

    # --- identity: challenge and registration --------------------------------------------

    def challenge(self) -> tuple[str, int]:
        """A fresh nonce and its lifetime in seconds."""
        return self.nonces.issue(self.kernel.now()), self.nonces.ttl

    def register(
        self,
        *,
        launch_token: object,
        nonce: object,
        public_key: object,
        signature: object,
        orch_id: object,
        task_id: object,
        requested_scope: object,
        ctx: RequestContext,
        resource: object = None,
    ) -> IssuedToken:
        """Register an agent instance and issue its first token.

        ``resource`` (RFC 8707) names the one resource the token is for; it must be among
        the launch token's resources when it names any. A registration over mTLS binds
        the token to the client certificate, one with a DPoP proof (``ctx.dpop``) to the
        proof's key (``cnf``); delegated tokens for this agent are bound the same way.

        Nothing is consumed by a request whose own fields are invalid: every field is
        checked first (400), then the launch token and scope ceiling (401/403, nothing
        consumed), then the nonce and the signature; the nonce, the launch token, the
        agent record and the audit events are then committed in one transaction.
        """
        try:
            pending = self._register(
                launch_token,
                nonce,
                public_key,
                signature,
                orch_id,
                task_id,
                requested_scope,
                ctx,
                resource=resource,
                deny=self.kernel.deny,
            )
            try:
                if pending.unit is not None:
                    self.kernel.commit(pending.unit)
            except Unauthorized as exc:
                raise self.kernel.deny(exc, replace(pending.base, detail=exc.reason)) from None
        except TaskleaseError:
            self.metrics.registrations.labels("failure").inc()
            raise
        return self._registered(pending)

    def prepare_register(
        self,
        *,
        launch_token: object,
        nonce: object,
        public_key: object,
        signature: object,
        orch_id: object,
        task_id: object,
        requested_scope: object,
        ctx: RequestContext,
        resource: object = None,
    ) -> PendingRegistration:
        """The first half of :meth:`register` for an event loop: checks and signing only.

        Writes nothing and never waits for a commit: an audited refusal comes back as a
        pending result for :meth:`complete_register` to record and raise (a malformed
        request, which is not audited, raises here). It reads the store and verifies a
        signature, so a loop calls it inline only when ``store.local_reads``.
        """
        try:
            return self._register(
                launch_token,
                nonce,
                public_key,
                signature,
                orch_id,
                task_id,
                requested_scope,
                ctx,
                resource=resource,
                deny=_defer_denial,
            )
        except _Refused as refused:
            return PendingRegistration(
                refused.unit,
                None,
                refused.denial or AuditEntry(""),
                0.0,
                refusal=refused.error,
                denial=refused.denial,
            )
        except TaskleaseError:
            self.metrics.registrations.labels("failure").inc()
            raise

    async def complete_register(self, pending: PendingRegistration) -> IssuedToken:
        """Write what :meth:`prepare_register` decided (group-committed), then answer."""
        try:
            if pending.refusal is not None:
                # A refusal is written even if the request is cancelled meanwhile: its
                # audit event, or the spent nonce of a failed proof, must not be lost.
                if pending.denial is not None:
                    write = self.kernel.arecord(pending.denial)
                else:
                    write = self.kernel.acommit(pending.unit or _no_change)
                await asyncio.shield(write)
            elif pending.unit is not None:
                try:
                    await self.kernel.acommit(pending.unit)
                except Unauthorized as exc:
                    denial = replace(pending.base, detail=exc.reason)
                    raise await self.kernel.adeny(exc, denial) from None
            if pending.refusal is not None:
                raise pending.refusal
        except TaskleaseError:
            self.metrics.registrations.labels("failure").inc()
            raise
        return self._registered(pending)

    def _registered(self, pending: PendingRegistration) -> IssuedToken:
        if pending.issued is None:  # pragma: no cover - a refusal is raised before this
            raise TypeError("a refused registration has no token")
        self.metrics.registrations.labels("success").inc()
        self.metrics.tokens_issued.labels("agent").inc()
        self.metrics.active_agents.inc()
        elapsed = time.perf_counter() - pending.started
        self.metrics.issuance_seconds.labels("register").observe(elapsed)
        return pending.issued

    def _register(
        self,
        launch_token: object,
        nonce: object,
        public_key: object,
        signature: object,
        orch_id: object,
        task_id: object,
        requested_scope: object,
        ctx: RequestContext,
        *,
        resource: object = None,
        deny: Callable[[TaskleaseError, AuditEntry], Exception],
    ) -> PendingRegistration:
        """Check and sign a registration; ``deny`` audits a refusal (or defers it)."""
        started = time.perf_counter()
        cfg = self.config
        if not isinstance(launch_token, str) or not launch_token:
            raise InvalidRequest("missing required field: launch_token")
        if not isinstance(nonce, str) or not nonce:
            raise InvalidRequest("missing required field: nonce")
        orch = validate_segment(orch_id, field="orch_id")
        task = validate_segment(task_id, field="task_id")
        if requested_scope is None or requested_scope == []:
            raise InvalidRequest("missing required field: requested_scope")
        scope = scope_rules.validate_scopes(requested_scope, field="requested_scope")
        key = decode_public_key(public_key)
        sig = decode_signature(signature)
        named_resource = validate_resource(resource, field="resource")
        now = self.kernel.now()
        base = AuditEntry(
            event_type="registration_failed",
            outcome="denied",
            task_id=task,
            orch_id=orch,
            request_id=ctx.request_id,
        )
        if not LAUNCH_TOKEN_PATTERN.match(launch_token):
            raise deny(
                Unauthorized("launch token: launch token not found"),
                replace(base, detail="launch token malformed"),
            )

        lt_hash = launch_token_hash(launch_token)
        record = self.store.get_launch_token(lt_hash)
        if record is None:
            raise deny(
                Unauthorized("launch token: launch token not found"),
                replace(base, detail=f"launch token not found ({lt_hash[:12]})"),
            )
        if now >= record.expires_at:
            raise deny(
                Unauthorized("launch token: launch token expired"),
                replace(base, detail=f"launch token expired ({lt_hash[:12]})"),
            )
        if record.single_use and record.consumed_at is not None:
            raise deny(
                Unauthorized("launch token: launch token already consumed"),
                replace(base, detail=f"launch token already consumed ({lt_hash[:12]})"),
            )
        iat = int(now)
        principal = record.principal or (f"app:{record.app_id}" if record.app_id else "admin")
        try:
            issuance = check_issuance(
                "register",
                Parent(
                    holder="",
                    scope=record.allowed_scope,
                    audience=record.audience,
                    principal=principal,
                    lineage=(app_ancestor(record.app_id),) if record.app_id else (),
                    ceiling=iat + cfg.renewal_ceiling,
                    ttl=record.max_ttl,
                    renewals=0,
                ),
                holder="",
                scope=scope,
                iat=iat,
                requested_ttl=self._ttl(record.max_ttl, cfg.default_ttl),
                config=cfg,
                dead_ancestor=self.kernel.app_standing(record.app_id),
            )
        except Refusal as refusal:
            if refusal.event_type == "attenuation":
                self.metrics.scope_rejections.labels("/v1/register").inc()
                raise deny(
                    refusal.error,
                    replace(
                        base,
                        event_type="registration_policy_violation",
                        detail=f"scope violation: requested {_fmt(scope)} exceeds allowed "
                        f"{_fmt(record.allowed_scope)}",
                    ),
                ) from None
            # The launch token's app was removed: the token is as dead as an unknown one.
            raise deny(
                Unauthorized("launch token: launch token not found"),
                replace(base, detail=f"{refusal.detail} ({lt_hash[:12]})"),
            ) from None
        try:
            audience = choose_audience(named_resource, record.audience, cfg.audience)
        except InvalidTarget as exc:
            raise deny(
                exc,
                replace(
                    base,
                    event_type="registration_policy_violation",
                    detail=f"resource refused: {exc.detail} requested={named_resource} "
                    f"allowed={_fmt(record.audience)}",
                ),
            ) from None
        cnf = self._registration_binding(ctx, now, base, deny)
        try:
            nonce_expiry = self.nonces.check(nonce, now)
        except Unauthorized as exc:
            raise deny(exc, replace(base, detail=f"nonce refused: {exc.reason}")) from None
        n_hash = nonce_hash(nonce)
        if not verify_possession(key, nonce, sig):
            # Spend the nonce: a failed proof must not leave it reusable.
            failure = Unauthorized("nonce signature verification failed")
            failure.denial_id = new_denial_id()

            def burn(tx: WriteTx) -> list[AuditEntry]:
                tx.consume_nonce(n_hash, nonce_expiry + cfg.clock_skew)
                detail = f"nonce signature verification failed | denial={failure.denial_id}"
                return [replace(base, detail=detail)]

            if deny is _defer_denial:
                raise _Refused(failure, unit=burn)
            self.kernel.commit(burn)
            raise failure

        agent_id = str(new_agent_id(cfg.trust_domain, orch, task))
        client_id = "admin"
        if record.app_id:
            app = self.store.get_app(record.app_id)
            client_id = app.client_id if app is not None else record.app_id
        token, claims = mint(
            self.keyring,
            kind=KIND_AGENT,
            iss=cfg.issuer,
            sub=agent_id,
            aud=audience,
            iat=iat,
            ttl=issuance.ttl(iat),
            lineage=issuance.lineage,
            max_exp=issuance.max_exp,
            scope=scope,
            client_id=client_id,
            task_id=task,
            orch_id=orch,
            principal=principal,
            agent_key=key,
            cnf=cnf or None,
        )
        token, reference = self._size_adapted(token, claims)
        agent = AgentRecord(
            agent_id=agent_id,
            public_key=key,
            orch_id=orch,
            task_id=task,
            scope=scope,
            app_id=record.app_id,
            client_id=client_id,
            registered_at=now,
            cnf=json.dumps(cnf, separators=(",", ":"), sort_keys=True) if cnf else "",
            audience=audience if audience != cfg.audience else (),
            token_ttl=record.max_ttl,
        )
        suffix = f" app_id={record.app_id}" if record.app_id else ""
        suffix += _binding_suffix(claims, reference)

        def unit(tx: WriteTx) -> list[AuditEntry]:
            if not tx.consume_nonce(n_hash, nonce_expiry + cfg.clock_skew):
                raise Unauthorized("nonce: nonce already consumed")
            if not tx.consume_launch_token(lt_hash, now):
                raise Unauthorized("consume launch token: launch token already consumed")
            tx.insert_agent(agent)
            if reference is not None:
                tx.insert_reference_token(reference)
            tx.put_agent_session(new_session(cfg, agent_id, principal, now))
            ids = AuditEntry("", agent_id=agent_id, task_id=task, orch_id=orch)
            return [
                replace(
                    ids,
                    event_type="agent_registered",
                    detail=f"Agent registered with scope {_fmt(scope)}{suffix} "
                    f"principal={principal} principal_ref={principal_ref(principal)} "
                    f"launch_token={lt_hash[:12]}",
                    request_id=ctx.request_id,
                ),
                replace(
                    ids,
                    event_type="token_issued",
                    detail=f"Token issued, jti={claims.jti}, ttl={claims.exp - claims.iat}{suffix}",
                    request_id=ctx.request_id,
                ),
            ]

        return PendingRegistration(unit, IssuedToken(token, claims), base, started)

    # --- validation -------------------------------------------------------------------

    def validate(
        self,
        token: str,
        *,
        audience: str | None = None,
        presented: Presentation | None = None,
        ctx: RequestContext | None = None,
    ) -> Claims:
        """Validate an agent access token (``/v1/token/validate``); raises TokenRejected.

        ``audience`` is the resource server's own identifier (RFC 8707): a token minted
        for another resource is refused; without it the token must carry the broker's
        default audience. ``presented`` is what the resource server saw on its request
        (client certificate thumbprint, DPoP proof, method and URI): a bound token is
        refused without the matching proof. By-reference tokens are resolved here, and
        tokens with a critical scope are checked against the store (high assurance).
        Raises :class:`Unavailable` while the revocation index is not confirmed current.
        """
        if self._monotonic() > self._current_until:
            raise self._stale()
        started = time.perf_counter()
        try:
            claims = self._verify_token(token, (KIND_AGENT,), audience=audience)
            self._check_binding(claims, token, presented or Presentation())
            self._assure(claims, ctx or RequestContext(), audit_denial=True)
            return claims
        except TokenRejected as exc:
            self.metrics.validation_failures.labels(exc.category).inc()
            raise
        finally:
            self.metrics.validation_seconds.observe(time.perf_counter() - started)

    def _verify_token(
        self,
        token: str,
        kinds: frozenset[str] | tuple[str, ...],
        *,
        audience: str | None = None,
        any_audience: bool = False,
    ) -> Claims:
        """A signed JWT or a by-reference token, verified and its claims checked."""
        if not is_reference_token(token):
            return self.validator.validate(
                token, kinds, audience=audience, any_audience=any_audience
            )
        record = self.store.get_reference_token(reference_hash(token))
        if record is None:
            raise TokenRejected("unknown by-reference token", "signature")
        if record.kind not in kinds:
            raise TokenRejected("typ not allowed", "signature")
        try:
            claims = claims_from_reference(record)
        except ClaimsError as exc:
            raise TokenRejected(f"by-reference token: {exc}", "claims") from None
        return self.validator.check_claims(claims, audience=audience, any_audience=any_audience)

    def _check_binding(self, claims: Claims, token: str, presented: Presentation) -> None:
        try:
            check_binding(
                claims.raw.get("cnf"), token, presented, dpop=self.dpop, now=self.kernel.now()
            )
        except BindingError as exc:
            raise TokenRejected(exc.reason, "binding") from None

    def _assure(self, claims: Claims, ctx: RequestContext, *, audit_denial: bool) -> bool:
        """High-assurance validation for critical scopes (``core.assurance``).

        Returns False (nothing done) for tokens without a critical scope. Otherwise reads
        the live revocation state and the holder's record from the store, audits the
        outcome with ``high_assurance=true`` and raises :class:`TokenRejected` on refusal
        (audited here only when ``audit_denial``; the caller audits otherwise). A store
        failure propagates: the request fails closed.
        """
        if not is_critical(claims.scope, self.config.critical_scopes):
            return False
        reason = live_denial(self.store, claims)
        ids = replace(_about(claims), resource=ctx.path, request_id=ctx.request_id)
        if reason is not None:
            reason = f"{reason} high_assurance=true"
            if audit_denial:
                entry = replace(
                    ids,
                    event_type="token_validation_failed",
                    outcome="denied",
                    detail=f"{reason} jti={claims.jti}",
                )
                self.kernel.record(entry)
            raise TokenRejected(reason, "revoked")
        entry = replace(
            ids,
            event_type="token_validated",
            detail=f"high_assurance=true live revocation and agent record checked "
            f"jti={claims.jti} path={ctx.path}",
        )
        self.kernel.record(entry)
        return True

    def _registration_binding(
        self,
        ctx: RequestContext,
        now: float,
        base: AuditEntry,
        deny: Callable[[TaskleaseError, AuditEntry], Exception],
    ) -> dict[str, str]:
        """The ``cnf`` a registration earns: its client certificate and/or DPoP key."""
        cnf: dict[str, str] = {}
        if ctx.cert_thumbprint:
            cnf["x5t#S256"] = ctx.cert_thumbprint
        if ctx.dpop:
            try:
                cnf["jkt"] = self.dpop.verify(ctx.dpop, htm=ctx.method, htu=ctx.url, now=now)
            except BindingError as exc:
                raise deny(
                    Unauthorized("invalid DPoP proof", reason=exc.reason),
                    replace(base, detail=f"registration DPoP proof refused: {exc.reason}"),
                ) from None
        return cnf

    def _size_adapted(self, token: str, claims: Claims) -> tuple[str, ReferenceTokenRecord | None]:
        """``token``, or a by-reference token (and its record) when it is too large."""
        if len(token) <= self.config.reference_token_threshold:
            return token, None
        reference, record = new_reference(claims, clock_skew=self.config.clock_skew)
        self.metrics.tokens_issued.labels("by_reference").inc()
        return reference, record

    def authenticate(
        self,
        authorization: str | None,
        ctx: RequestContext,
        *,
        kinds: frozenset[str] = ALL_KINDS,
        scope: str | None = None,
    ) -> Claims:
        """Check a request's bearer credential; audit and raise on any failure.

        401 ``unauthorized`` for a missing, malformed, invalid, expired or revoked token
        (one generic detail outward, the reason in the audit log); 403
        ``insufficient_scope`` for a valid token of the wrong kind or without ``scope``;
        503 ``service_unavailable`` while the revocation index is not confirmed current.
        """
        if self._monotonic() > self._current_until:
            raise self._stale()
        cfg = self.config
        base = AuditEntry(
            "token_auth_failed", outcome="denied", resource=ctx.path, request_id=ctx.request_id
        )
        if not authorization:
            raise self.kernel.deny(
                Unauthorized("missing authorization header"),
                replace(base, detail=f"missing authorization header | path={ctx.path}"),
            )
        if authorization.startswith("Bearer "):
            scheme, token = "Bearer", authorization[7:]
        elif authorization.startswith("DPoP "):
            scheme, token = "DPoP", authorization[5:]
        else:
            raise self.kernel.deny(
                Unauthorized("invalid authorization scheme"),
                replace(base, detail=f"invalid authorization scheme | path={ctx.path}"),
            )
        started = time.perf_counter()
        try:
            # Agent tokens may be audience-bound to a resource and still manage themselves
            # here (renew, release, delegate): docs/decisions.md, "Audience-bound tokens".
            claims = self._verify_token(token, ALL_KINDS, any_audience=True)
            if claims.kind != KIND_AGENT and not any(a in claims.aud for a in cfg.audience):
                raise TokenRejected("audience mismatch", "audience")
            presented = Presentation(
                scheme=scheme,
                cert_thumbprint=ctx.cert_thumbprint,
                dpop_proof=ctx.dpop,
                htm=ctx.method,
                htu=ctx.url,
            )
            self._check_binding(claims, token, presented)
            self._assure(claims, ctx, audit_denial=False)
        except TokenRejected as exc:
            self.metrics.validation_failures.labels(exc.category).inc()
            raise self.kernel.deny(
                Unauthorized("token verification failed", reason=exc.reason),
                replace(base, detail=f"token verification failed: {exc.reason} | path={ctx.path}"),
            ) from None
        finally:
            self.metrics.validation_seconds.observe(time.perf_counter() - started)
        ids = _about(claims)
        if claims.kind not in kinds:
            self.metrics.scope_rejections.labels(ctx.path).inc()
            raise self.kernel.deny(
                InsufficientScope("this kind of token is not accepted here"),
                replace(
                    ids,
                    event_type="scope_violation",
                    outcome="denied",
                    resource=ctx.path,
                    request_id=ctx.request_id,
                    detail=f"scope_violation | token kind {claims.kind} not accepted | "
                    f"path={ctx.path}",
                ),
            )
        if scope is not None and not scope_rules.is_subset([scope], claims.scope):
            self.metrics.scope_rejections.labels(ctx.path).inc()
            raise self.kernel.deny(
                InsufficientScope(f"token lacks required scope: {scope}"),
                replace(
                    ids,
                    event_type="scope_violation",
                    outcome="denied",
                    resource=ctx.path,
                    request_id=ctx.request_id,
                    detail=f"scope_violation | required={scope} | "
                    f"actual={','.join(claims.scope)} | path={ctx.path}",
                ),
            )
        return claims

    # --- renewal, release, delegation ------------------------------------------------

    def _agent_only(self, claims: Claims, what: str, ctx: RequestContext) -> None:
        if claims.kind != KIND_AGENT:
            raise self.kernel.deny(
                Forbidden(
                    f"only agent tokens can {what}",
                    hint="admin and app tokens are re-issued by authenticating again",
                ),
                AuditEntry(
                    f"{what}_denied",
                    outcome="denied",
                    agent_id=claims.sub,
                    request_id=ctx.request_id,
                    detail=f"{claims.kind} token may not {what}",
                ),
            )

    def renew(self, claims: Claims, ctx: RequestContext) -> IssuedToken:
        """Issue a successor with the same lifetime and revoke the predecessor, atomically.

        Refused past ``max_renewals`` (``renewal_count_exceeded``) and once the original
        registration is ``renewal_ceiling`` old (``renewal_ceiling_exceeded``); the
        successor never outlives that ceiling. Two concurrent renewals: exactly one wins.
        """
        started = time.perf_counter()
        cfg = self.config
        self._agent_only(claims, "renew", ctx)
        now = self.kernel.now()
        iat = int(now)
        ids = _about(claims)
        failed = replace(
            ids, event_type="token_renewal_failed", outcome="denied", request_id=ctx.request_id
        )
        parent = Parent.of_token(claims, cfg)
        # A registration's own tokens count their renewals in its session too, so that a
        # resumption (which has no token to read the count from) continues the budget.
        own = not claims.delegation_chain
        session = self.store.get_agent_session(claims.sub) if own else None
        if session is not None and session.resumes > parent.renewals:
            parent = replace(parent, renewals=session.resumes)
        try:
            issuance = check_issuance(
                "renew",
                parent,
                holder=claims.sub,
                scope=claims.scope,
                iat=iat,
                requested_ttl=parent.ttl,
                config=cfg,
            )
        except Refusal as refusal:
            raise self.kernel.deny(
                refusal.error, replace(failed, detail=f"{refusal.detail} jti={claims.jti}")
            ) from None
        ttl = issuance.ttl(iat)
        token, new_claims = mint(
            self.keyring,
            kind=KIND_AGENT,
            iss=cfg.issuer,
            sub=claims.sub,
            aud=claims.aud,
            iat=iat,
            ttl=ttl,
            scope=claims.scope,
            client_id=claims.client_id,
            task_id=claims.task_id,
            orch_id=claims.orch_id,
            oiat=claims.oiat,
            rnc=issuance.renewals,
            delegation_chain=claims.delegation_chain,
            principal=issuance.principal,
            agent_key=agent_key_of(claims.raw),
            cnf=_cnf_of(claims),  # the holder keeps its binding (RFC 8705, RFC 9449)
            lineage=issuance.lineage,
            grant=issuance.grant,
            max_exp=issuance.max_exp,
        )
        token, reference = self._size_adapted(token, new_claims)
        predecessor = RevocationRecord("token", claims.jti, iat, claims.exp + cfg.clock_skew + 1)

        def unit(tx: WriteTx) -> list[AuditEntry]:
            if not tx.insert_revocation(predecessor):
                raise Unauthorized(
                    "token verification failed", reason="token already renewed or revoked"
                )
            if own:
                current = tx.get_agent_session(claims.sub)
                if current is not None:
                    if current.resumes >= issuance.renewals:
                        raise Unauthorized(
                            "token verification failed",
                            reason="the lineage was renewed or resumed meanwhile",
                        )
                    tx.put_agent_session(replace(current, resumes=issuance.renewals))
            if reference is not None:
                tx.insert_reference_token(reference)
            return [
                replace(
                    ids,
                    event_type="token_renewed",
                    request_id=ctx.request_id,
                    detail=f"token renewed for agent={claims.sub} old_jti={claims.jti} "
                    f"new_jti={new_claims.jti} renewals={new_claims.rnc}/{cfg.max_renewals} "
                    f"ttl={ttl}{_binding_suffix(new_claims, reference)}",
                )
            ]

        try:
            self.kernel.commit(unit)
        except Unauthorized as exc:
            raise self.kernel.deny(
                exc, replace(failed, detail=f"{exc.reason} jti={claims.jti}")
            ) from None
        self.kernel.apply_revocations([predecessor])
        self.metrics.tokens_revoked.labels("renewal").inc()
        self.metrics.tokens_issued.labels("renew").inc()
        self.metrics.issuance_seconds.labels("renew").observe(time.perf_counter() - started)
        return IssuedToken(token, new_claims)

    def release(self, claims: Claims, ctx: RequestContext) -> None:
        """The holder gives its token up (revoked at level ``token``)."""
        records = ending_records(claims, int(self.kernel.now()), self.config)

        def unit(tx: WriteTx) -> list[AuditEntry]:
            for record in records:
                tx.insert_revocation(record)
            return [
                AuditEntry(
                    "token_released",
                    agent_id=claims.sub,
                    task_id=claims.task_id,
                    orch_id=claims.orch_id,
                    request_id=ctx.request_id,
                    detail=f"token released | jti={claims.jti}",
                )
            ]

        self.kernel.commit(unit)
        self.kernel.apply_revocations(records)
        self.metrics.tokens_revoked.labels("release").inc()

    def delegate(
        self,
        claims: Claims,
        *,
        delegate_to: object,
        scope: object,
        ttl: object,
        ctx: RequestContext,
        resource: object = None,
    ) -> IssuedToken:
        """Hand a subset of the caller's scope to another registered agent.

        The delegated token can only narrow: scope ⊆ the caller's, lifetime ≤ the caller's
        remaining lifetime, depth ≤ ``max_delegation_depth`` (checked here and on every
        validation), audience equal to the caller's or narrower (``resource``, RFC 8707).
        Only agent tokens delegate: admin and app authority never flows into an agent
        through delegation. The token is bound to the delegate's own registered key or
        certificate (``cnf``), never the delegator's: the delegate proves possession.
        """
        started = time.perf_counter()
        cfg = self.config
        if not isinstance(delegate_to, str) or not delegate_to:
            raise InvalidRequest("missing required field: delegate_to")
        if scope is None or scope == []:
            raise InvalidRequest("missing required field: scope")
        requested = scope_rules.validate_scopes(scope, field="scope")
        if ttl is not None and (type(ttl) is not int):
            raise InvalidRequest("ttl must be an integer number of seconds")
        named_resource = validate_resource(resource, field="resource")
        self._agent_only(claims, "delegate", ctx)
        depth = len(claims.delegation_chain)
        denied = AuditEntry(
            "delegation_attenuation_violation",
            outcome="denied",
            agent_id=claims.sub,
            task_id=claims.task_id,
            orch_id=claims.orch_id,
            request_id=ctx.request_id,
            deleg_depth=depth,
        )
        about = f"delegator={claims.sub} | target={delegate_to[:256]}"
        _, dead = self.kernel.agent_standing(delegate_to)
        now = self.kernel.now()
        iat = int(now)
        want = self._ttl(ttl if isinstance(ttl, int) else None, cfg.delegation_default_ttl)
        try:
            issuance = check_issuance(
                "delegate",
                Parent.of_token(claims, cfg),
                holder=delegate_to,
                scope=requested,
                iat=iat,
                requested_ttl=want,
                config=cfg,
                dead_ancestor=dead,
            )
        except Refusal as refusal:
            if refusal.event_type != "denied":
                self.metrics.scope_rejections.labels("/v1/delegate").inc()
            if refusal.event_type == "depth":
                raise self.kernel.deny(
                    refusal.error,
                    replace(
                        denied,
                        event_type="delegation_depth_exceeded",
                        detail=f"{refusal.detail} | {about}",
                    ),
                ) from None
            if refusal.event_type == "attenuation":
                raise self.kernel.deny(
                    refusal.error,
                    replace(
                        denied,
                        detail=f"delegation_attenuation_violation | {about} | {refusal.detail}",
                    ),
                ) from None
            if refusal.event_type == "denied":
                # An unknown delegate and a dead one look the same to the caller.
                raise self.kernel.deny(
                    NotFound("delegate agent not found"),
                    replace(denied, event_type="delegation_denied", detail=f"{dead} | {about}"),
                ) from None
            raise self.kernel.deny(
                Unauthorized("token verification failed", reason=refusal.detail),
                replace(
                    _about(claims),
                    event_type="token_auth_failed",
                    outcome="denied",
                    request_id=ctx.request_id,
                    detail=f"delegator token at its end: {refusal.detail} jti={claims.jti}",
                ),
            ) from None
        target = self.store.get_agent(delegate_to)
        if target is None:  # pragma: no cover - agent_standing found it a moment ago
            raise NotFound("delegate agent not found")
        try:
            audience = narrow_audience(named_resource, claims.aud, cfg.audience)
        except InvalidTarget as exc:
            raise self.kernel.deny(
                exc,
                replace(
                    denied,
                    detail=f"audience would widen | {about} | requested={named_resource} | "
                    f"allowed={_fmt(claims.aud)}",
                ),
            ) from None
        if not verify_chain_records(claims.delegation_chain, claims.sub, self._verify_keys):
            raise self.kernel.deny(
                Unauthorized("token verification failed", reason="forged delegation record"),
                AuditEntry(
                    "token_auth_failed",
                    outcome="denied",
                    agent_id=claims.sub,
                    request_id=ctx.request_id,
                    detail="delegation chain carries a record without a valid broker signature",
                ),
            )
        delegated_at = format_rfc3339(now)
        message = record_signing_input(claims.sub, delegate_to, claims.scope, delegated_at)
        record = DelegationRecord(
            agent=claims.sub,
            scope=claims.scope,
            delegated_at=delegated_at,
            signature=self.keyring.sign_detached(message).hex(),
        )
        chain = (*claims.delegation_chain, record)
        life = issuance.ttl(iat)
        token, new_claims = mint(
            self.keyring,
            kind=KIND_AGENT,
            iss=cfg.issuer,
            sub=delegate_to,
            aud=audience,
            iat=iat,
            ttl=life,
            scope=requested,
            client_id=claims.client_id,
            task_id=claims.task_id,
            orch_id=claims.orch_id,
            oiat=claims.oiat,
            rnc=issuance.renewals,
            delegation_chain=chain,
            principal=issuance.principal,
            agent_key=target.public_key,
            cnf=json.loads(target.cnf) if target.cnf else None,
            lineage=issuance.lineage,
            max_exp=issuance.max_exp,
        )
        token, reference = self._size_adapted(token, new_claims)

        def unit(tx: WriteTx) -> list[AuditEntry]:
            if reference is not None:
                tx.insert_reference_token(reference)
            return [
                AuditEntry(
                    "delegation_created",
                    agent_id=delegate_to,
                    task_id=claims.task_id,
                    orch_id=claims.orch_id,
                    request_id=ctx.request_id,
                    deleg_depth=len(chain),
                    deleg_chain_hash=new_claims.chain_hash,
                    detail=f"delegation from {claims.sub} to {delegate_to} "
                    f"scope={_fmt(requested)} depth={len(chain)} jti={new_claims.jti}"
                    f"{_binding_suffix(new_claims, reference)}",
                )
            ]

        self.kernel.commit(unit)
        self.metrics.delegation_depth.observe(len(chain))
        self.metrics.tokens_issued.labels("delegate").inc()
        self.metrics.issuance_seconds.labels("delegate").observe(time.perf_counter() - started)
        return IssuedToken(token, new_claims)

    def _verify_keys(self) -> list[Any]:
        return [k for kid in self.keyring.kids() if (k := self.keyring.verify_key(kid))]

    # --- revocation -------------------------------------------------------------------

    def revoke(self, claims: Claims, *, level: object, target: object, ctx: RequestContext) -> int:
        """Revoke at ``token`` (a jti), ``agent`` (a subject), ``task`` or ``chain`` level.

        Idempotent; durable before it returns; enforced by this process at once.
        """
        if not isinstance(level, str) or not level or not isinstance(target, str) or not target:
            raise InvalidRequest("level and target are required")
        if level not in LEVELS:
            raise InvalidRequest(
                f"invalid revocation level: {level[:32]}", hint="use token, agent, task or chain"
            )
        if len(target) > 2048:
            raise InvalidRequest("target is too long")
        if (level == "token" and target.count(".") == 2) or is_reference_token(target):
            # Never a credential as a target: it would be stored, audited and published.
            raise InvalidRequest(
                "target must be a token id (jti), not a token",
                hint="read the jti with `tasklease token inspect`",
            )
        now = self.kernel.now()
        revoked_at = math.floor(now)
        expires_at = self.kernel.revocation_expiry(revoked_at)
        records = [RevocationRecord(level, target, revoked_at, expires_at)]
        if level == "token":
            # A token's end is its descendants' end (they list its jti in their lineage).
            records.append(RevocationRecord("chain", target, revoked_at, expires_at))

        def unit(tx: WriteTx) -> list[AuditEntry]:
            for record in records:
                tx.insert_revocation(record)
            if level == "agent" and parse_agent_id(target):
                tx.set_agent_status(target, "revoked")
            return [
                AuditEntry(
                    "token_revoked",
                    agent_id=target,
                    request_id=ctx.request_id,
                    detail=f"revoked at level={level} target={target} by={claims.sub}",
                )
            ]

        self.kernel.commit(unit)
        self.kernel.apply_revocations(records)
        self.metrics.tokens_revoked.labels(level).inc()
        return 1

    # --- admin and apps ----------------------------------------------------------------

    def admin_auth(self, secret: object, ctx: RequestContext) -> IssuedToken:
        if not isinstance(secret, str) or not secret:
            raise InvalidRequest("secret is required")
        if not verify_secret(self.config.admin_secret_hash or None, secret):
            self.metrics.auth.labels("admin", "failure").inc()
            raise self.kernel.deny(
                Unauthorized("invalid credentials"),
                AuditEntry(
                    "admin_auth_failed",
                    outcome="denied",
                    request_id=ctx.request_id,
                    detail=f"admin authentication failed from {ctx.remote}",
                ),
            )
        started = time.perf_counter()
        token, claims = mint(
            self.keyring,
            kind=KIND_ADMIN,
            iss=self.config.issuer,
            sub="admin",
            aud=self.config.audience,
            iat=int(self.kernel.now()),
            ttl=self._ttl(self.config.admin_token_ttl, self.config.default_ttl),
            scope=ADMIN_SCOPES,
            client_id="admin",
        )
        self.kernel.record(
            AuditEntry(
                "admin_auth",
                request_id=ctx.request_id,
                detail=f"admin authenticated as admin from {ctx.remote} jti={claims.jti}",
            )
        )
        self.metrics.auth.labels("admin", "success").inc()
        self.metrics.tokens_issued.labels("admin").inc()
        self.metrics.issuance_seconds.labels("admin").observe(time.perf_counter() - started)
        return IssuedToken(token, claims)

    def _check_app_ttl(self, token_ttl: object) -> int | None:
        if token_ttl is None:
            return None
        if type(token_ttl) is not int or not 60 <= token_ttl <= 86400:
            raise InvalidTTL(
                f"invalid token TTL: must be between 60 and 86400 seconds, got {token_ttl}"
            )
        return token_ttl

    def register_app(
        self,
        claims: Claims,
        *,
        name: object,
        scopes: object,
        token_ttl: object,
        ctx: RequestContext,
    ) -> tuple[AppRecord, str]:
        """Create an app; returns the record and its client secret (shown once)."""
        if not isinstance(name, str) or not name:
            raise InvalidRequest("name is required")
        if scopes is None or scopes == []:
            raise InvalidRequest("scopes must not be empty")
        ttl = self._check_app_ttl(token_ttl)
        if len(name) > 64 or not _APP_NAME.match(name):
            raise InvalidRequest(
                "invalid app name: must be lowercase letters, digits, and hyphens",
                hint="2-64 characters starting with a letter; hyphens only between letters",
            )
        ceiling = scope_rules.validate_scopes(scopes, field="scopes")
        now = self.kernel.now()
        parts = name.split("-")
        abbrev = "".join(p[0] for p in parts)[:3] if len(parts) > 1 else name[:2]
        secret = new_secret()
        app = AppRecord(
            app_id=f"app-{name}-{secrets.token_hex(3)}",
            name=name,
            client_id=f"{abbrev}-{secrets.token_hex(6)}",
            secret_hash=hash_secret(secret),
            scopes=ceiling,
            token_ttl=ttl if ttl is not None else self.config.app_token_ttl,
            status="active",
            created_at=now,
            updated_at=now,
            created_by=claims.sub,
        )

        def unit(tx: WriteTx) -> list[AuditEntry]:
            tx.insert_app(app)
            return [
                AuditEntry(
                    "app_registered",
                    request_id=ctx.request_id,
                    detail=f"app={name} app_id={app.app_id} client_id={app.client_id} "
                    f"scopes={_fmt(ceiling)} token_ttl={app.token_ttl} by={claims.sub}",
                )
            ]

        self.kernel.commit(unit)
        return app, secret

    def list_apps(self) -> list[AppRecord]:
        return self.store.list_apps()

    def get_app(self, app_id: str) -> AppRecord:
        app = self.store.get_app(app_id)
        if app is None:
            raise NotFound("app not found")
        return app

    def update_app(
        self, claims: Claims, app_id: str, *, scopes: object, token_ttl: object, ctx: RequestContext
    ) -> AppRecord:
        """Change an app's scope ceiling and/or token TTL, atomically (both or neither)."""
        if (scopes is None or scopes == []) and token_ttl is None:
            raise InvalidRequest("at least one of scopes or token_ttl must be provided")
        ceiling = (
            None
            if scopes is None or scopes == []
            else scope_rules.validate_scopes(scopes, field="scopes")
        )
        ttl = self._check_app_ttl(token_ttl)
        app = self.get_app(app_id)
        updated = replace(
            app,
            scopes=ceiling if ceiling is not None else app.scopes,
            token_ttl=ttl if ttl is not None else app.token_ttl,
            updated_at=self.kernel.now(),
        )

        def unit(tx: WriteTx) -> list[AuditEntry]:
            tx.update_app(updated)
            return [
                AuditEntry(
                    "app_updated",
                    request_id=ctx.request_id,
                    detail=f"app_id={app_id} scopes={_fmt(updated.scopes)} "
                    f"token_ttl={app.token_ttl}->{updated.token_ttl} updated_by={claims.sub}",
                )
            ]

        self.kernel.commit(unit)
        return updated

    def deregister_app(self, claims: Claims, app_id: str, ctx: RequestContext) -> AppRecord:
        """Deactivate an app: its secret stops working and its live app tokens are revoked."""
        app = self.get_app(app_id)
        now = self.kernel.now()
        updated = replace(app, status="inactive", updated_at=now)
        revoked_at = math.floor(now)
        expires_at = self.kernel.revocation_expiry(revoked_at)
        records = [
            # The app's own tokens (subject app:<app_id>) ...
            RevocationRecord("agent", f"app:{app_id}", revoked_at, expires_at),
            # ... and every agent token launched through it, with their descendants.
            RevocationRecord("chain", app_ancestor(app_id), revoked_at, expires_at),
        ]

        def unit(tx: WriteTx) -> list[AuditEntry]:
            tx.update_app(updated)
            for record in records:
                tx.insert_revocation(record)
            return [
                AuditEntry(
                    "app_deregistered",
                    request_id=ctx.request_id,
                    detail=f"app_id={app_id} name={app.name} deregistered_by={claims.sub}",
                )
            ]

        self.kernel.commit(unit)
        self.kernel.apply_revocations(records)
        return updated

    def app_auth(
        self, client_id: object, client_secret: object, ctx: RequestContext
    ) -> IssuedToken:
        if (
            not isinstance(client_id, str)
            or not client_id
            or not isinstance(client_secret, str)
            or not client_secret
        ):
            raise InvalidRequest("client_id and client_secret are required")
        app = self.store.get_app_by_client_id(client_id) if len(client_id) <= 128 else None
        ok = verify_secret(app.secret_hash if app else None, client_secret)
        reason = (
            "unknown_client_id"
            if app is None
            else "wrong_secret"
            if not ok
            else "app_inactive"
            if app.status != "active"
            else ""
        )
        if reason:
            self.metrics.auth.labels("app", "failure").inc()
            shown = client_id if app is not None else "<unknown>"
            raise self.kernel.deny(
                Unauthorized("Authentication failed"),
                AuditEntry(
                    "app_auth_failed",
                    outcome="denied",
                    request_id=ctx.request_id,
                    detail=f"client_id={shown} reason={reason}",
                ),
            )
        if app is None:  # unreachable: reason is set when app is None
            raise Unauthorized("Authentication failed")
        active_app = app
        started = time.perf_counter()
        token, claims = mint(
            self.keyring,
            kind=KIND_APP,
            iss=self.config.issuer,
            sub=f"app:{active_app.app_id}",
            aud=self.config.audience,
            iat=int(self.kernel.now()),
            ttl=self._ttl(active_app.token_ttl, self.config.app_token_ttl),
            scope=APP_SCOPES,
            client_id=active_app.client_id,
        )
        self.kernel.record(
            AuditEntry(
                "app_authenticated",
                request_id=ctx.request_id,
                detail=f"client_id={active_app.client_id} app_id={active_app.app_id}",
            )
        )
        self.metrics.auth.labels("app", "success").inc()
        self.metrics.tokens_issued.labels("app").inc()
        self.metrics.issuance_seconds.labels("app").observe(time.perf_counter() - started)
        return IssuedToken(token, claims)

    # --- launch tokens ------------------------------------------------------------------

    def create_launch_token(
        self,
        claims: Claims,
        *,
        agent_name: object,
        allowed_scope: object,
        max_ttl: object,
        single_use: object,
        ttl: object,
        ctx: RequestContext,
        principal: object = None,
        resource: object = None,
    ) -> tuple[str, LaunchTokenRecord]:
        """Mint a launch token. App callers are held to their app's scope ceiling.

        ``resource`` (a string or a list, RFC 8707) names the resources its agents'
        tokens may be for; a registration then names one of them (``invalid_target``).

        ``principal`` (``kind:value``, e.g. ``user:alice@example.com``) names the human
        the agents it launches work for; by default the creator (``admin`` or
        ``app:<app_id>``). Every token of those agents, and every token delegated from
        them, carries it (docs/agents.md).
        """
        cfg = self.config
        if not isinstance(agent_name, str) or not agent_name:
            raise InvalidRequest("agent_name is required")
        if len(agent_name) > 256:
            raise InvalidRequest("agent_name must be at most 256 characters")
        if allowed_scope is None or allowed_scope == []:
            raise InvalidRequest("allowed_scope must not be empty")
        scope = scope_rules.validate_scopes(allowed_scope, field="allowed_scope")
        for name, value in (("max_ttl", max_ttl), ("ttl", ttl)):
            if value is not None and type(value) is not int:
                raise InvalidRequest(f"{name} must be an integer number of seconds")
        if single_use is not None and not isinstance(single_use, bool):
            raise InvalidRequest("single_use must be a boolean")
        named = None if principal is None else validate_principal(principal)
        resources = validate_resources(resource, field="resource")
        validity = cfg.launch_token_ttl if not isinstance(ttl, int) or ttl <= 0 else ttl
        if validity > cfg.launch_token_max_ttl:
            raise InvalidTTL(
                f"invalid launch token ttl: at most {cfg.launch_token_max_ttl} seconds, "
                f"got {validity}"
            )
        agent_ttl = self._ttl(max_ttl if isinstance(max_ttl, int) else None, cfg.default_ttl)
        app_id = ""
        if claims.kind == KIND_APP:
            app_id = claims.sub.removeprefix("app:")
            app = self.store.get_app(app_id)
            if app is None or app.status != "active":
                raise self.kernel.deny(
                    Forbidden("app not found or not active"),
                    AuditEntry(
                        "launch_token_denied",
                        outcome="denied",
                        agent_id=claims.sub,
                        request_id=ctx.request_id,
                        detail=f"launch token denied for agent={agent_name} by={claims.sub} "
                        "reason=app not active",
                    ),
                )
            if not scope_rules.is_subset(scope, app.scopes):
                self.metrics.scope_rejections.labels(ctx.path or "launch-tokens").inc()
                raise self.kernel.deny(
                    Forbidden(f"requested scopes exceed app ceiling; allowed: {_fmt(app.scopes)}"),
                    AuditEntry(
                        "scope_ceiling_exceeded",
                        outcome="denied",
                        agent_id=claims.sub,
                        request_id=ctx.request_id,
                        detail=f"app={app_id} requested={_fmt(scope)} ceiling={_fmt(app.scopes)}",
                    ),
                )
        now = self.kernel.now()
        token, digest = new_launch_token()
        record = LaunchTokenRecord(
            token_hash=digest,
            agent_name=agent_name,
            allowed_scope=scope,
            max_ttl=agent_ttl,
            single_use=single_use is not False,
            created_at=now,
            expires_at=now + validity,
            created_by=claims.sub,
            app_id=app_id,
            principal=named or (f"app:{app_id}" if app_id else "admin"),
            audience=resources,
        )
        suffix = f" app_id={app_id}" if app_id else ""
        if resources:
            suffix += f" resource={_fmt(resources)}"
        suffix += f" principal={record.principal} principal_ref={principal_ref(record.principal)}"

        def unit(tx: WriteTx) -> list[AuditEntry]:
            tx.insert_launch_token(record)
            return [
                AuditEntry(
                    "launch_token_issued",
                    request_id=ctx.request_id,
                    detail=f"launch token issued for agent={agent_name} scope={_fmt(scope)} "
                    f"max_ttl={agent_ttl} single_use={record.single_use} id={digest[:12]} "
                    f"created_by={claims.sub}{suffix}",
                )
            ]

        self.kernel.commit(unit)
        self.metrics.launch_tokens_created.inc()
        return token, record

    # --- signing keys --------------------------------------------------------------------

    def rotate_signing_key(self, claims: Claims, ctx: RequestContext) -> tuple[str, str]:
        """Make a new signing key active; returns ``(new_kid, previous_kid)``.

        With a ``key_dir`` configured the key is written there (:func:`rotate_key`) and
        the ring reloaded from disk, so a restart keeps it; otherwise (in-memory brokers)
        a fresh in-memory key is added. Every older key stays in the ring and the JWKS:
        tokens it signed verify until they expire. The ring and the validator built on
        it are swapped by single reference assignments, so a concurrent request sees
        either the old ring or the new one, never a mixture. Other processes sharing the
        key directory pick the key up within a second (:meth:`refresh_keys`).

        Raises:
            Unavailable: the audit event could not be stored (the new key is then on
                disk but not active in this process until it restarts).
        """
        with self._rotation_lock:
            previous = self.keyring
            if self.config.key_dir:
                directory = Path(self.config.key_dir)
                rotate_key(directory)
                ring = load_or_create_keyring(directory)
            else:
                older = [k for kid in previous.kids() if (k := previous.verify_key(kid))]
                ring = KeyRing(nacl.signing.SigningKey.generate(), older)
            self.kernel.record(
                AuditEntry(
                    "signing_key_rotated",
                    request_id=ctx.request_id,
                    detail=f"signing key rotated new_kid={ring.active_kid} "
                    f"previous_kid={previous.active_kid} keys={len(ring.kids())} "
                    f"by={claims.sub}",
                )
            )
            validator = Validator(self.config, ring, self.clock, self.revocations)
            self.validator = validator
            self.keyring = ring
        return ring.active_kid, previous.active_kid

    def _key_files(self) -> tuple[str, ...] | None:
        if not self.config.key_dir:
            return None
        try:
            return tuple(sorted(p.name for p in Path(self.config.key_dir).glob("signing-*.pem")))
        except OSError:
            return None

    def refresh_keys(self) -> bool:
        """Adopt signing keys another process sharing the key directory added or retired.

        Cheap when nothing changed (one directory listing); run by the server's
        housekeeping loop, so a rotation on one worker or replica reaches the others.
        Returns True when the ring changed.
        """
        files = self._key_files()
        if files is None or files == self._known_key_files:
            return False
        with self._rotation_lock:
            ring = load_or_create_keyring(Path(self.config.key_dir))
            self._known_key_files = files
            if ring.kids() == self.keyring.kids():
                return False
            self.validator = Validator(self.config, ring, self.clock, self.revocations)
            self.keyring = ring
        _log.info("signing keys reloaded: active kid %s", ring.active_kid)
        return True

    # --- audit, health, housekeeping -------------------------------------------------------

    def audit_events(self, query: AuditQuery) -> tuple[list[AuditEvent], int]:
        return self.store.query_audit(query)

    def health(self) -> dict[str, Any]:
        try:
            count, _ = self.store.audit_head()
            connected = True
        except Exception:  # noqa: BLE001 - a health check reports, it does not raise
            count, connected = 0, False
        current = self._monotonic() <= self._current_until
        reason = (
            ""
            if connected and current
            else "database unreachable"
            if current
            else "revocation state not confirmed current within "
            f"{self.config.revocation_staleness_bound:g}s: protected requests fail closed"
        )
        return {
            "status": "degraded" if reason else "ok",
            **({"reason": reason} if reason else {}),
            "revocations_current": current,
            "version": VERSION,
            "uptime": int(time.monotonic() - self.started_at),
            "db_connected": connected,
            "audit_events_count": count,
            "revocation_entries": len(self.revocations),
            "signing_kid": self.keyring.active_kid,
        }

    def prune(self) -> int:
        """Drop revocation entries, nonces and launch tokens nothing can use any more."""
        now = self.kernel.now()
        removed = self.revocations.prune(now)
        removed_rows = self.store.prune(now)
        self.metrics.revocation_entries.set(len(self.revocations))
        _log.debug("pruned %d index entries and %d rows", removed, removed_rows)
        return removed

    # --- revocation feed (resource servers' verifiers) -----------------------------------

    def add_revocation_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every batch of revocations this process applies.

        It runs on the thread that applied them (a request thread or the refresher), so it
        must be cheap and thread-safe, for example ``loop.call_soon_threadsafe(event.set)``.
        It carries no data: the listener reads :meth:`revocation_feed` from its cursor.
        Returns a function that removes the listener.
        """
        return self.kernel.add_listener(listener)

    def authenticate_feed_reader(self, authorization: str | None, ctx: RequestContext) -> Claims:
        """Authenticate a revocation-feed reader: any valid admin or app token.

        Raises as :meth:`authenticate` (401 ``unauthorized``; 403 ``insufficient_scope``
        for an agent token), which audits every refusal; successful reads are not audited.
        """
        return self.authenticate(authorization, ctx, kinds=_FEED_READER_KINDS)

    def revocation_feed(self, cursor: int | None) -> tuple[list[RevocationRecord], int]:
        """Revocation entries in ``seq`` order and the cursor to continue from.

        Without a cursor: a snapshot of every unexpired entry. With one: the unexpired
        entries whose ``seq`` is greater. The returned cursor is the greatest ``seq``
        returned, or the given cursor (0 without one) when nothing is new. An entry that
        is widened later comes again with a new ``seq``.
        """
        now = self.kernel.now()
        if cursor is None:
            records = self.store.load_revocations(now)
        else:
            records = [r for r in self.store.revocations_since(cursor) if r.expires_at > now]
        last = max((r.seq for r in records), default=cursor or 0)
        return records, max(last, cursor or 0)

    def refresh_revocations(self) -> int:
        """Apply revocations other processes committed since we last looked."""
        fresh = self.store.revocations_since(self.revocations.last_seq)
        if fresh:
            self.kernel.apply_revocations(fresh)
        return len(fresh)

    # --- revocation propagation between replicas (store watch) ---------------------------

    def watch_revocations(self) -> Callable[[], None] | None:
        """Follow the store's change notifications, if it offers them; return a stopper.

        Returns None (nothing started) for a store without the optional ``start_watch``
        capability (``core.store``): the caller polls :meth:`refresh_revocations`. With a
        watch, every notification and check-in refreshes the index, and from now on
        validation and protected requests fail closed (``Unavailable``) unless a refresh
        succeeded within ``revocation_staleness_bound`` seconds.
        """
        start_watch = getattr(self.store, "start_watch", None)
        if start_watch is None or self._watch is not None:
            return None
        self._current_until = self._monotonic() + self.config.revocation_staleness_bound
        self._watch = start_watch(self._on_store_change, interval=_WATCH_INTERVAL)
        watch = self._watch

        def stop() -> None:
            watch.close()
            self._watch = None
            self._current_until = math.inf

        return stop

    def _on_store_change(self, committed_at: float | None) -> None:
        """The watch's callback (its own thread): refresh, then mark the index current.

        Current as of when the read *started*: it sees every revocation committed before.
        A failed read raises to the watch and leaves the deadline where it was.
        """
        checked = self._monotonic()
        applied = self.refresh_revocations()
        self._current_until = checked + self.config.revocation_staleness_bound
        if applied and committed_at is not None:
            self.metrics.revocation_propagation_seconds.observe(
                max(0.0, self.clock.now() - committed_at)
            )

    def _stale(self) -> Unavailable:
        return Unavailable(
            "revocation state cannot be confirmed current; try again shortly",
            reason="revocation index stale beyond revocation_staleness_bound",
            retry_after=1,
        )

    # --- token holders' revocation (RFC 7009) and introspection (RFC 7662) -------------

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
        if not isinstance(token, str) or not token:
            raise InvalidRequest("missing required field: token")
        if token_type_hint is not None and not isinstance(token_type_hint, str):
            raise InvalidRequest("token_type_hint must be a string")
        ids = replace(_about(caller), request_id=ctx.request_id, resource=ctx.path)
        try:
            target = self._verify_token(token, (KIND_AGENT,), any_audience=True)
        except TokenRejected as exc:
            entry = replace(
                ids,
                event_type="token_revocation_ignored",
                detail=f"RFC 7009 revocation of an inactive token ignored: {exc.reason}",
            )
            self.kernel.record(entry)
            return False
        if target.sub != caller.sub:
            raise self.kernel.deny(
                Forbidden("the token does not belong to the caller"),
                replace(
                    ids,
                    event_type="token_revocation_denied",
                    outcome="denied",
                    detail=f"caller={caller.sub} may not revoke a token of {target.sub} "
                    f"jti={target.jti}",
                ),
            )
        records = ending_records(target, int(self.kernel.now()), self.config)

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

        self.kernel.commit(unit)
        self.kernel.apply_revocations(records)
        self.metrics.tokens_revoked.labels("holder").inc()
        return True

    def authenticate_introspector(self, authorization: str | None, ctx: RequestContext) -> Claims:
        """Authenticate an introspection caller: an admin or app token (any scope).

        Raises as :meth:`authenticate` (agent tokens: 403 ``insufficient_scope``).
        """
        return self.authenticate(authorization, ctx, kinds=_FEED_READER_KINDS)

    def introspect(
        self, caller: Claims, *, token: object, audience: object = None, ctx: RequestContext
    ) -> dict[str, Any]:
        """RFC 7662 introspection of an agent access token (JWT or by-reference).

        Returns the claims with ``active: true``, or exactly :data:`INACTIVE` for anything
        else: unknown, malformed, expired, revoked, another kind of token, for another
        ``audience`` when one is given, or (for an app caller) a token of another app's
        agents. The binding (``cnf``) is reported, not checked: the resource server holds
        the connection and the proof. Critical scopes are checked against the store.

        Raises:
            InvalidRequest: ``token`` missing or not a string.
        """
        if not isinstance(token, str) or not token:
            raise InvalidRequest("missing required field: token")
        wanted = validate_resource(audience, field="audience")
        try:
            claims = self._verify_token(
                token, (KIND_AGENT,), audience=wanted, any_audience=wanted is None
            )
            if caller.kind == KIND_APP and claims.client_id != caller.client_id:
                return dict(INACTIVE)
            self._assure(claims, ctx, audit_denial=True)
        except TokenRejected as exc:
            self.metrics.validation_failures.labels(exc.category).inc()
            return dict(INACTIVE)
        return introspection_response(claims)

    # --- agents that trust each other: core/mutual.py, liveness.py, discovery.py

    def mutual_initiate(
        self, claims: Claims, *, responder: object, initiator_nonce: object, ctx: RequestContext
    ) -> tuple[str, str, int]:
        """Handshake step 1 (:func:`tasklease.core.mutual.initiate`)."""
        self._agent_only(claims, "handshake", ctx)
        return mutual.initiate(
            self, claims, responder=responder, initiator_nonce=initiator_nonce, ctx=ctx
        )

    def mutual_respond(
        self,
        claims: Claims,
        *,
        offer: object,
        responder_nonce: object,
        signature: object,
        ctx: RequestContext,
    ) -> tuple[str, mutual.HandshakeResult]:
        """Handshake step 2 (:func:`tasklease.core.mutual.respond`)."""
        self._agent_only(claims, "handshake", ctx)
        return mutual.respond(
            self,
            claims,
            offer=offer,
            responder_nonce=responder_nonce,
            signature=signature,
            ctx=ctx,
        )

    def mutual_complete(
        self, claims: Claims, *, answer: object, signature: object, ctx: RequestContext
    ) -> tuple[str, mutual.HandshakeResult]:
        """Handshake step 3 (:func:`tasklease.core.mutual.complete`)."""
        self._agent_only(claims, "handshake", ctx)
        return mutual.complete(self, claims, answer=answer, signature=signature, ctx=ctx)

    def heartbeat(
        self,
        claims: Claims,
        *,
        timestamp: object,
        jti: object,
        signature: object,
        done: object,
        ctx: RequestContext,
    ) -> AgentSession:
        """Record a signed heartbeat, or the agent's release (:mod:`tasklease.core.liveness`)."""
        self._agent_only(claims, "heartbeat", ctx)
        return liveness.heartbeat(
            self,
            claims,
            timestamp=timestamp,
            proof_jti=jti,
            signature=signature,
            done=done,
            ctx=ctx,
        )

    def sweep_silent_agents(self) -> list[str]:
        """Revoke (level ``agent``) supervised agents silent for interval x misses."""
        return liveness.sweep_silent_agents(self, self.instance_id)

    def resume(
        self, *, agent_id: object, nonce: object, signature: object, ctx: RequestContext
    ) -> IssuedToken:
        """A fresh token for a restarted agent that proves its registered key.

        The token keeps the registration's holder binding (``AgentRecord.cnf``), so the
        request must prove it again (its client certificate and/or a DPoP proof for the
        registered key, without ``ath``), and the registration's audience.
        """
        record = (
            self.store.get_agent(agent_id)
            if isinstance(agent_id, str) and parse_agent_id(agent_id)
            else None
        )
        cnf: dict[str, str] = json.loads(record.cnf) if record is not None and record.cnf else {}
        if record is not None and cnf:
            self._resume_binding(record, cnf, ctx)
        return liveness.resume(self, agent_id=agent_id, nonce=nonce, signature=signature, ctx=ctx)

    def _resume_binding(
        self, record: AgentRecord, cnf: dict[str, str], ctx: RequestContext
    ) -> None:
        """Refuse (audited) a resumption that does not prove the registration's binding."""
        try:
            x5t = cnf.get("x5t#S256")
            if x5t is not None and not hmac.compare_digest(
                ctx.cert_thumbprint.encode(), str(x5t).encode()
            ):
                raise BindingError("resume without the registration's client certificate")
            jkt = cnf.get("jkt")
            if jkt is not None:
                proven = self.dpop.verify(
                    ctx.dpop, htm=ctx.method, htu=ctx.url, now=self.kernel.now()
                )
                if not hmac.compare_digest(proven.encode(), str(jkt).encode()):
                    raise BindingError("resume DPoP proof signed by another key")
        except BindingError as exc:
            raise self.kernel.deny(
                Unauthorized("resume refused", reason=exc.reason),
                AuditEntry(
                    "agent_resume_denied",
                    outcome="denied",
                    agent_id=record.agent_id,
                    task_id=record.task_id,
                    orch_id=record.orch_id,
                    request_id=ctx.request_id,
                    detail=f"resume refused: {exc.reason}",
                ),
            ) from None

    def discovery_bind(
        self,
        claims: Claims,
        *,
        endpoint: object,
        issued_at: object,
        signature: object,
        ctx: RequestContext,
    ) -> DiscoveryBinding:
        """Publish the caller's endpoint, signed by its registered key."""
        self._agent_only(claims, "bind", ctx)
        return discovery.bind(
            self, claims, endpoint=endpoint, issued_at=issued_at, signature=signature, ctx=ctx
        )

    def discovery_resolve(self, agent_id: str) -> tuple[DiscoveryBinding, AgentRecord]:
        """An active agent's signed endpoint binding and registration (NotFound if none)."""
        return discovery.resolve(self, agent_id)


def expires_at_text(record: LaunchTokenRecord) -> str:
    return format_rfc3339_seconds(record.expires_at)
