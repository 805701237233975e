"""The Broker: one method per credential operation, and the only place that audits.

HTTP handlers, the CLI and tests call these methods; none of them writes audit events or
touches storage itself. Every method either completes with its state change and audit
event durable together, or raises a :class:`~tasklease.core.errors.TaskleaseError`
(after auditing the denial, where there is a caller to attribute it to).
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tasklease.core import scopes as scope_rules
from tasklease.core.audit import AuditEntry, AuditLog
from tasklease.core.clock import Clock, SystemClock, format_rfc3339, format_rfc3339_seconds
from tasklease.core.config import Config
from tasklease.core.delegation import record_signing_input, verify_chain_records
from tasklease.core.errors import (
    Forbidden,
    InsufficientScope,
    InvalidRequest,
    InvalidTTL,
    NotFound,
    RenewalCeilingExceeded,
    RenewalCountExceeded,
    ScopeViolation,
    TaskleaseError,
    Unauthorized,
)
from tasklease.core.identity import (
    NonceIssuer,
    decode_public_key,
    decode_signature,
    nonce_hash,
    verify_possession,
)
from tasklease.core.keys import KeyRing
from tasklease.core.launch import LAUNCH_TOKEN_PATTERN, launch_token_hash, new_launch_token
from tasklease.core.metrics import Metrics
from tasklease.core.passwords import hash_secret, new_secret, verify_secret
from tasklease.core.revocation import LEVELS, RevocationIndex
from tasklease.core.spiffe import new_agent_id, parse_agent_id, validate_segment
from tasklease.core.store import (
    AgentRecord,
    AppRecord,
    AuditEvent,
    AuditQuery,
    LaunchTokenRecord,
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
    DelegationRecord,
    mint,
)
from tasklease.core.validation import TokenRejected, Validator

__all__ = ["ALL_KINDS", "VERSION", "Broker", "IssuedToken", "RequestContext", "expires_at_text"]

VERSION = "0.1.0"
ALL_KINDS = frozenset({KIND_AGENT, KIND_ADMIN, KIND_APP})
_APP_NAME = re.compile(r"^[a-z][a-z0-9]+(?:-[a-z0-9]+)*$")
_log = logging.getLogger("tasklease.broker")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking, for the audit trail: never used for an authorization decision."""

    request_id: str = ""
    remote: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: Claims

    @property
    def expires_in(self) -> int:
        return self.claims.exp - self.claims.iat


def _about(claims: Claims) -> AuditEntry:
    """The identifying fields of an audit entry about the holder of ``claims``."""
    return AuditEntry("", agent_id=claims.sub, task_id=claims.task_id, orch_id=claims.orch_id)


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
        self.validator = Validator(config, keyring, self.clock, self.revocations)
        self.audit = AuditLog(store, self.clock, on_batch=self.metrics.observe_batch)
        # Replicas that share a database must share this secret (server.build_broker
        # keeps it beside the signing keys); a lone in-process broker may use a random one.
        self.nonces = NonceIssuer(nonce_secret or os.urandom(32), config.nonce_ttl)
        self.started_at = time.monotonic()
        self.revocations.apply(store.load_revocations(self.clock.now()))
        self.metrics.revocation_entries.set(len(self.revocations))

    # --- helpers --------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock.now()

    def _commit(self, unit: Callable[[WriteTx], Sequence[AuditEntry]]) -> list[AuditEvent]:
        events = self.audit.commit(unit)
        for ev in events:
            self.metrics.audit_events.labels(ev.event_type).inc()
        return events

    def _deny(self, exc: TaskleaseError, entry: AuditEntry) -> TaskleaseError:
        """Audit a denial with its precise reason, then hand back the error to raise."""
        self._commit(lambda _tx: [entry])
        return exc

    def _ttl(self, requested: int | None, default: int) -> int:
        ttl = default if requested is None or requested <= 0 else requested
        return min(ttl, self.config.max_ttl)

    def _revocation_expiry(self, revoked_at: float) -> float:
        return revoked_at + self.config.max_ttl + self.config.clock_skew + 1

    def _apply_revocations(self, records: Sequence[RevocationRecord]) -> None:
        self.revocations.apply(records)
        self.metrics.revocation_entries.set(len(self.revocations))

    # --- identity: challenge and registration --------------------------------------------

    def challenge(self) -> tuple[str, int]:
        """A fresh nonce and its lifetime in seconds."""
        return self.nonces.issue(self._now()), self.nonces.ttl

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
    ) -> IssuedToken:
        """Register an agent instance and issue its first token.

        Nothing is consumed by a request whose own fields are invalid: every field is
        checked first (400), then the launch token and scope ceiling (401/403, nothing
        consumed), then the nonce and the signature; the nonce, the launch token, the
        agent record and the audit events are then committed in one transaction.
        """
        started = time.perf_counter()
        try:
            issued = self._register(
                launch_token, nonce, public_key, signature, orch_id, task_id, requested_scope, ctx
            )
        except TaskleaseError:
            self.metrics.registrations.labels("failure").inc()
            raise
        self.metrics.registrations.labels("success").inc()
        self.metrics.tokens_issued.labels("agent").inc()
        self.metrics.active_agents.inc()
        self.metrics.issuance_seconds.labels("register").observe(time.perf_counter() - started)
        return issued

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
    ) -> IssuedToken:
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
        if not LAUNCH_TOKEN_PATTERN.match(launch_token):
            raise Unauthorized("launch token: launch token not found")

        now = self._now()
        lt_hash = launch_token_hash(launch_token)
        base = AuditEntry(
            event_type="registration_failed",
            outcome="denied",
            task_id=task,
            orch_id=orch,
            request_id=ctx.request_id,
        )
        record = self.store.get_launch_token(lt_hash)
        if record is None:
            raise self._deny(
                Unauthorized("launch token: launch token not found"),
                replace(base, detail=f"launch token not found ({lt_hash[:12]})"),
            )
        if now > record.expires_at:
            raise self._deny(
                Unauthorized("launch token: launch token expired"),
                replace(base, detail=f"launch token expired ({lt_hash[:12]})"),
            )
        if record.single_use and record.consumed_at is not None:
            raise self._deny(
                Unauthorized("launch token: launch token already consumed"),
                replace(base, detail=f"launch token already consumed ({lt_hash[:12]})"),
            )
        missing = scope_rules.uncovered(scope, record.allowed_scope)
        if missing:
            self.metrics.scope_rejections.labels("/v1/register").inc()
            raise self._deny(
                ScopeViolation("requested scope exceeds allowed scope"),
                replace(
                    base,
                    event_type="registration_policy_violation",
                    detail=f"scope violation: requested {_fmt(scope)} exceeds allowed "
                    f"{_fmt(record.allowed_scope)}",
                ),
            )
        nonce_expiry = self.nonces.check(nonce, now)
        n_hash = nonce_hash(nonce)
        if not verify_possession(key, nonce, sig):
            # Spend the nonce: a failed proof must not leave it reusable.
            def burn(tx: WriteTx) -> list[AuditEntry]:
                tx.consume_nonce(n_hash, nonce_expiry + cfg.clock_skew)
                return [replace(base, detail="nonce signature verification failed")]

            self._commit(burn)
            raise Unauthorized("nonce signature verification failed")

        agent_id = str(new_agent_id(cfg.trust_domain, orch, task))
        client_id = "admin"
        if record.app_id:
            app = self.store.get_app(record.app_id)
            client_id = app.client_id if app is not None else record.app_id
        iat = int(now)
        token, claims = mint(
            self.keyring,
            kind=KIND_AGENT,
            iss=cfg.issuer,
            sub=agent_id,
            aud=cfg.audience,
            iat=iat,
            ttl=self._ttl(record.max_ttl, cfg.default_ttl),
            scope=scope,
            client_id=client_id,
            task_id=task,
            orch_id=orch,
        )
        agent = AgentRecord(
            agent_id=agent_id,
            public_key=key,
            orch_id=orch,
            task_id=task,
            scope=scope,
            app_id=record.app_id,
            client_id=client_id,
            registered_at=now,
        )
        suffix = f" app_id={record.app_id}" if record.app_id else ""

        def unit(tx: WriteTx) -> list[AuditEntry]:
            if not tx.consume_nonce(n_hash, nonce_expiry + cfg.clock_skew):
                raise Unauthorized("nonce: nonce already consumed")
            if not tx.consume_launch_token(lt_hash, now):
                raise Unauthorized("consume launch token: launch token already consumed")
            tx.insert_agent(agent)
            ids = AuditEntry("", agent_id=agent_id, task_id=task, orch_id=orch)
            return [
                replace(
                    ids,
                    event_type="agent_registered",
                    detail=f"Agent registered with scope {_fmt(scope)}{suffix}",
                    request_id=ctx.request_id,
                ),
                replace(
                    ids,
                    event_type="token_issued",
                    detail=f"Token issued, jti={claims.jti}, ttl={claims.exp - claims.iat}{suffix}",
                    request_id=ctx.request_id,
                ),
            ]

        try:
            self._commit(unit)
        except Unauthorized as exc:
            raise self._deny(exc, replace(base, detail=exc.reason)) from None
        return IssuedToken(token, claims)

    # --- validation -------------------------------------------------------------------

    def validate(self, token: str, *, audience: str | None = None) -> Claims:
        """Validate an agent access token (``/v1/token/validate``); raises TokenRejected."""
        started = time.perf_counter()
        try:
            return self.validator.validate(token, (KIND_AGENT,), audience=audience)
        except TokenRejected as exc:
            self.metrics.validation_failures.labels(exc.category).inc()
            raise
        finally:
            self.metrics.validation_seconds.observe(time.perf_counter() - started)

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
        ``insufficient_scope`` for a valid token of the wrong kind or without ``scope``.
        """
        base = AuditEntry(
            "token_auth_failed", outcome="denied", resource=ctx.path, request_id=ctx.request_id
        )
        if not authorization:
            raise self._deny(
                Unauthorized("missing authorization header"),
                replace(base, detail=f"missing authorization header | path={ctx.path}"),
            )
        if not authorization.startswith("Bearer "):
            raise self._deny(
                Unauthorized("invalid authorization scheme"),
                replace(base, detail=f"invalid authorization scheme | path={ctx.path}"),
            )
        started = time.perf_counter()
        try:
            claims = self.validator.validate(authorization[7:], ALL_KINDS)
        except TokenRejected as exc:
            self.metrics.validation_failures.labels(exc.category).inc()
            raise self._deny(
                Unauthorized("token verification failed", reason=exc.reason),
                replace(base, detail=f"token verification failed: {exc.reason} | path={ctx.path}"),
            ) from None
        finally:
            self.metrics.validation_seconds.observe(time.perf_counter() - started)
        ids = _about(claims)
        if claims.kind not in kinds:
            self.metrics.scope_rejections.labels(ctx.path).inc()
            raise self._deny(
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
            raise self._deny(
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
            raise self._deny(
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
        now = self._now()
        iat = int(now)
        ids = _about(claims)
        ceiling = claims.oiat + cfg.renewal_ceiling
        if claims.rnc >= cfg.max_renewals:
            raise self._deny(
                RenewalCountExceeded(
                    f"token has been renewed {claims.rnc} times, the maximum",
                    hint="register a new agent instance with a fresh launch token",
                ),
                replace(
                    ids,
                    event_type="token_renewal_failed",
                    outcome="denied",
                    request_id=ctx.request_id,
                    detail=f"renewal count limit reached ({claims.rnc}/{cfg.max_renewals}) "
                    f"jti={claims.jti}",
                ),
            )
        if iat >= ceiling:
            raise self._deny(
                RenewalCeilingExceeded(
                    "token has reached its maximum lifetime since registration",
                    hint="register a new agent instance with a fresh launch token",
                ),
                replace(
                    ids,
                    event_type="token_renewal_failed",
                    outcome="denied",
                    request_id=ctx.request_id,
                    detail=f"renewal lifetime ceiling reached (oiat={claims.oiat}) "
                    f"jti={claims.jti}",
                ),
            )
        lifetime = max(1, min(claims.exp - claims.iat, cfg.max_ttl))
        ttl = min(lifetime, ceiling - iat)
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
            rnc=claims.rnc + 1,
            delegation_chain=claims.delegation_chain,
        )
        predecessor = RevocationRecord("token", claims.jti, iat, claims.exp + cfg.clock_skew + 1)

        def unit(tx: WriteTx) -> list[AuditEntry]:
            if not tx.insert_revocation(predecessor):
                raise Unauthorized(
                    "token verification failed", reason="token already renewed or revoked"
                )
            return [
                replace(
                    ids,
                    event_type="token_renewed",
                    request_id=ctx.request_id,
                    detail=f"token renewed for agent={claims.sub} old_jti={claims.jti} "
                    f"new_jti={new_claims.jti} renewals={new_claims.rnc}/{cfg.max_renewals} "
                    f"ttl={ttl}",
                )
            ]

        try:
            self._commit(unit)
        except Unauthorized as exc:
            raise self._deny(
                exc,
                replace(
                    ids,
                    event_type="token_renewal_failed",
                    outcome="denied",
                    request_id=ctx.request_id,
                    detail=f"{exc.reason} jti={claims.jti}",
                ),
            ) from None
        self._apply_revocations([predecessor])
        self.metrics.tokens_revoked.labels("renewal").inc()
        self.metrics.tokens_issued.labels("renew").inc()
        self.metrics.issuance_seconds.labels("renew").observe(time.perf_counter() - started)
        return IssuedToken(token, new_claims)

    def release(self, claims: Claims, ctx: RequestContext) -> None:
        """The holder gives its token up (revoked at level ``token``)."""
        record = RevocationRecord(
            "token", claims.jti, int(self._now()), claims.exp + self.config.clock_skew + 1
        )

        def unit(tx: WriteTx) -> list[AuditEntry]:
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

        self._commit(unit)
        self._apply_revocations([record])
        self.metrics.tokens_revoked.labels("release").inc()

    def delegate(
        self,
        claims: Claims,
        *,
        delegate_to: object,
        scope: object,
        ttl: object,
        ctx: RequestContext,
    ) -> IssuedToken:
        """Hand a subset of the caller's scope to another registered agent.

        The delegated token can only narrow: scope ⊆ the caller's, lifetime ≤ the caller's
        remaining lifetime, depth ≤ ``max_delegation_depth`` (checked here and on every
        validation). Only agent tokens delegate: admin and app authority never flows
        into an agent through delegation.
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
        self._agent_only(claims, "delegate", ctx)
        depth = len(claims.delegation_chain)
        if depth >= cfg.max_delegation_depth:
            self.metrics.scope_rejections.labels("/v1/delegate").inc()
            raise self._deny(
                ScopeViolation("delegation depth limit exceeded"),
                AuditEntry(
                    "delegation_depth_exceeded",
                    outcome="denied",
                    agent_id=claims.sub,
                    task_id=claims.task_id,
                    orch_id=claims.orch_id,
                    request_id=ctx.request_id,
                    deleg_depth=depth,
                    detail=f"delegation depth {depth} at limit {cfg.max_delegation_depth} "
                    f"| delegator={claims.sub} | target={delegate_to}",
                ),
            )
        if not scope_rules.is_subset(requested, claims.scope):
            self.metrics.scope_rejections.labels("/v1/delegate").inc()
            raise self._deny(
                ScopeViolation("delegated scope exceeds delegator scope"),
                AuditEntry(
                    "delegation_attenuation_violation",
                    outcome="denied",
                    agent_id=claims.sub,
                    task_id=claims.task_id,
                    orch_id=claims.orch_id,
                    request_id=ctx.request_id,
                    deleg_depth=depth,
                    detail=f"delegation_attenuation_violation | delegator={claims.sub} | "
                    f"target={delegate_to} | requested={_fmt(requested)} | "
                    f"allowed={_fmt(claims.scope)}",
                ),
            )
        target = self.store.get_agent(delegate_to) if parse_agent_id(delegate_to) else None
        if target is None or target.status != "active":
            raise NotFound("delegate agent not found")
        if not verify_chain_records(claims.delegation_chain, claims.sub, self._verify_keys):
            raise self._deny(
                Unauthorized("token verification failed", reason="forged delegation record"),
                AuditEntry(
                    "token_auth_failed",
                    outcome="denied",
                    agent_id=claims.sub,
                    request_id=ctx.request_id,
                    detail="delegation chain carries a record without a valid broker signature",
                ),
            )
        now = self._now()
        iat = int(now)
        delegated_at = format_rfc3339(now)
        message = record_signing_input(claims.sub, delegate_to, claims.scope, delegated_at)
        record = DelegationRecord(
            agent=claims.sub,
            scope=claims.scope,
            delegated_at=delegated_at,
            signature=self.keyring.sign_detached(message).hex(),
        )
        chain = (*claims.delegation_chain, record)
        want = self._ttl(ttl if isinstance(ttl, int) else None, cfg.delegation_default_ttl)
        life = min(want, claims.exp - iat, claims.oiat + cfg.renewal_ceiling - iat)
        if life <= 0:
            raise Unauthorized("token verification failed", reason="delegator token at its end")
        token, new_claims = mint(
            self.keyring,
            kind=KIND_AGENT,
            iss=cfg.issuer,
            sub=delegate_to,
            aud=claims.aud,
            iat=iat,
            ttl=life,
            scope=requested,
            client_id=claims.client_id,
            task_id=claims.task_id,
            orch_id=claims.orch_id,
            oiat=claims.oiat,
            delegation_chain=chain,
        )
        self._commit(
            lambda _tx: [
                AuditEntry(
                    "delegation_created",
                    agent_id=delegate_to,
                    task_id=claims.task_id,
                    orch_id=claims.orch_id,
                    request_id=ctx.request_id,
                    deleg_depth=len(chain),
                    deleg_chain_hash=new_claims.chain_hash,
                    detail=f"delegation from {claims.sub} to {delegate_to} "
                    f"scope={_fmt(requested)} depth={len(chain)} jti={new_claims.jti}",
                )
            ]
        )
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
        now = self._now()
        revoked_at = math.floor(now)
        record = RevocationRecord(level, target, revoked_at, self._revocation_expiry(revoked_at))

        def unit(tx: WriteTx) -> list[AuditEntry]:
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

        self._commit(unit)
        self._apply_revocations([record])
        self.metrics.tokens_revoked.labels(level).inc()
        return 1

    # --- admin and apps ----------------------------------------------------------------

    def admin_auth(self, secret: object, ctx: RequestContext) -> IssuedToken:
        if not isinstance(secret, str) or not secret:
            raise InvalidRequest("secret is required")
        if not verify_secret(self.config.admin_secret_hash or None, secret):
            self.metrics.auth.labels("admin", "failure").inc()
            raise self._deny(
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
            iat=int(self._now()),
            ttl=self._ttl(self.config.admin_token_ttl, self.config.default_ttl),
            scope=ADMIN_SCOPES,
            client_id="admin",
        )
        self._commit(
            lambda _tx: [
                AuditEntry(
                    "admin_auth",
                    request_id=ctx.request_id,
                    detail=f"admin authenticated as admin from {ctx.remote} jti={claims.jti}",
                )
            ]
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
        now = self._now()
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

        self._commit(unit)
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
            updated_at=self._now(),
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

        self._commit(unit)
        return updated

    def deregister_app(self, claims: Claims, app_id: str, ctx: RequestContext) -> AppRecord:
        """Deactivate an app: its secret stops working and its live app tokens are revoked."""
        app = self.get_app(app_id)
        now = self._now()
        updated = replace(app, status="inactive", updated_at=now)
        revoked_at = math.floor(now)
        record = RevocationRecord(
            "agent", f"app:{app_id}", revoked_at, self._revocation_expiry(revoked_at)
        )

        def unit(tx: WriteTx) -> list[AuditEntry]:
            tx.update_app(updated)
            tx.insert_revocation(record)
            return [
                AuditEntry(
                    "app_deregistered",
                    request_id=ctx.request_id,
                    detail=f"app_id={app_id} name={app.name} deregistered_by={claims.sub}",
                )
            ]

        self._commit(unit)
        self._apply_revocations([record])
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
            raise self._deny(
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
            iat=int(self._now()),
            ttl=self._ttl(active_app.token_ttl, self.config.app_token_ttl),
            scope=APP_SCOPES,
            client_id=active_app.client_id,
        )
        self._commit(
            lambda _tx: [
                AuditEntry(
                    "app_authenticated",
                    request_id=ctx.request_id,
                    detail=f"client_id={active_app.client_id} app_id={active_app.app_id}",
                )
            ]
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
    ) -> tuple[str, LaunchTokenRecord]:
        """Mint a launch token. App callers are held to their app's scope ceiling."""
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
                raise self._deny(
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
                raise self._deny(
                    Forbidden(f"requested scopes exceed app ceiling; allowed: {_fmt(app.scopes)}"),
                    AuditEntry(
                        "scope_ceiling_exceeded",
                        outcome="denied",
                        agent_id=claims.sub,
                        request_id=ctx.request_id,
                        detail=f"app={app_id} requested={_fmt(scope)} ceiling={_fmt(app.scopes)}",
                    ),
                )
        now = self._now()
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
        )
        suffix = f" app_id={app_id}" if app_id else ""

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

        self._commit(unit)
        self.metrics.launch_tokens_created.inc()
        return token, record

    # --- audit, health, housekeeping -------------------------------------------------------

    def audit_events(self, query: AuditQuery) -> tuple[list[AuditEvent], int]:
        return self.store.query_audit(query)

    def health(self) -> dict[str, Any]:
        try:
            count, _ = self.store.audit_head()
            connected = True
        except Exception:  # noqa: BLE001 - a health check reports, it does not raise
            count, connected = 0, False
        return {
            "status": "ok" if connected else "degraded",
            "version": VERSION,
            "uptime": int(time.monotonic() - self.started_at),
            "db_connected": connected,
            "audit_events_count": count,
            "revocation_entries": len(self.revocations),
            "signing_kid": self.keyring.active_kid,
        }

    def prune(self) -> int:
        """Drop revocation entries, nonces and launch tokens nothing can use any more."""
        now = self._now()
        removed = self.revocations.prune(now)
        removed_rows = self.store.prune(now)
        self.metrics.revocation_entries.set(len(self.revocations))
        _log.debug("pruned %d index entries and %d rows", removed, removed_rows)
        return removed

    def refresh_revocations(self) -> int:
        """Apply revocations other processes committed since we last looked."""
        fresh = self.store.revocations_since(self.revocations.last_seq)
        if fresh:
            self._apply_revocations(fresh)
        return len(fresh)


def expires_at_text(record: LaunchTokenRecord) -> str:
    return format_rfc3339_seconds(record.expires_at)
