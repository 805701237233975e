"""Registration: a challenge nonce, then an agent instance's identity and first token.

Every field is checked first, then the launch token and the scope ceiling, then the nonce
and the proof of possession; the nonce, the launch token, the agent record, its session
and the audit events are then committed in one transaction. A refused request consumes
no launch token, but spends its nonce with its one audit event (a malformed one only when
its signature verifies): registration and resumption sign the same bytes, so a refused
registration's signature must not resume the agent (decision 262). An event loop runs
the two halves apart (:meth:`Registration.prepare_register` reads and signs, writing
nothing; :meth:`Registration.complete_register` group-commits what it decided).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from tasklease.core.attestation import (
    AttestationOutcome,
    AttestationService,
    check_attestation,
    declared_facts,
)
from tasklease.core.attestors import LAUNCH_TOKEN
from tasklease.core.audience import validate_resource
from tasklease.core.auditformat import AuditEntry, detail_field, reason_text
from tasklease.core.calls import registration_budgets
from tasklease.core.delegation import principal_ref
from tasklease.core.errors import (
    InvalidDPoPProof,
    InvalidRequest,
    TaskleaseError,
    Unauthorized,
    Unavailable,
    UseDPoPNonce,
)
from tasklease.core.identity import (
    NonceIssuer,
    decode_public_key,
    decode_signature,
    nonce_hash,
    reserving,
    spending,
    verify_possession,
)
from tasklease.core.issuing import binding_suffix, clamp_ttl, listed, mint_granted, size_adapted
from tasklease.core.kernel import (
    IssuedToken,
    Kernel,
    Parent,
    RequestContext,
    Service,
    read_in_write,
    with_denial,
)
from tasklease.core.lineage import Refusal, joint_parent, registration_app
from tasklease.core.liveness import new_session
from tasklease.core.records import AgentRecord, LaunchTokenRecord
from tasklease.core.refusalbudget import charge_refusal
from tasklease.core.registrationinputs import (
    RegistrationInputs,
    actor_of,
    attested_suffix,
    policy_of,
)
from tasklease.core.scopes import validate_scopes
from tasklease.core.signing import SigningKeys
from tasklease.core.spiffe import new_agent_id, validate_segment
from tasklease.core.store import WriteTx
from tasklease.rules.attest import Attestation
from tasklease.rules.binding import PROOF_REPLAYED, DPoPVerifier

__all__ = ["PendingRegistration", "Registration"]


@dataclass(frozen=True, slots=True)
class PendingRegistration:
    """A registration checked and signed, or refused, and not yet written.

    :meth:`Registration.prepare_register` returns it without writing anything;
    :meth:`Registration.complete_register` writes ``unit`` (the registration, or for a failed
    proof of possession only the spent nonce) or the audit-only ``denial``, then raises
    ``refusal`` or answers ``issued``.
    """

    unit: Callable[[WriteTx], Sequence[AuditEntry]] | None
    issued: IssuedToken | None
    base: AuditEntry  # the denial entry, should the commit refuse (nonce or token spent)
    started: float  # perf_counter at the start, for the issuance histogram
    refusal: TaskleaseError | None = None
    denial: AuditEntry | None = None
    # The nonce ``unit`` spends and until when: spent with the denial should ``unit`` lose
    # a race (the launch token used meanwhile), so its proof is spent either way.
    nonce: str = ""
    nonce_until: float = 0.0
    # What ``unit`` refused from inside its write, its denial audited there (the task's
    # revocation entry, read through the write): raised once ``unit`` is committed.
    refused: list[TaskleaseError] = field(default_factory=list)

    def raise_refused(self) -> None:
        """Raise what ``unit`` refused in its write, if it did."""
        if self.refused:
            raise self.refused[0]

    def lost(self, exc: TaskleaseError) -> Callable[[WriteTx], Sequence[AuditEntry]]:
        """What to write when ``unit`` raised ``exc``: the nonce spent, the denial."""
        denial = with_denial(exc, replace(self.base, detail=exc.reason))
        return spending(self.nonce, self.nonce_until, denial)


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


def _no_change(_tx: WriteTx) -> list[AuditEntry]:
    return []


def _defer_denial(exc: TaskleaseError, entry: AuditEntry) -> Exception:
    """A denial to be audited later, by whoever completes the operation (see _Refused)."""
    return _Refused(exc, denial=with_denial(exc, entry))


class Registration(Service):
    """Challenges and registrations. Thread-safe; one per broker."""

    def __init__(
        self,
        kernel: Kernel,
        keys: SigningKeys,
        nonces: NonceIssuer,
        dpop: DPoPVerifier,
        attestation: AttestationService,
    ) -> None:
        super().__init__(kernel)
        self._keys = keys
        self._nonces = nonces
        self._inputs = RegistrationInputs(kernel, dpop, attestation)

    def challenge(self) -> tuple[str, int]:
        """A fresh nonce and its lifetime in seconds."""
        return self._nonces.issue(self._kernel.now()), self._nonces.ttl

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
        attestation: object = None,
        declared: object = None,
        authorization_details: object = None,
    ) -> IssuedToken:
        """Register an agent instance and issue its first token.

        ``resource`` (RFC 8707) names the one resource the token is for; it must be among
        the launch token's resources when it names any. ``attestation``
        (``{type, evidence, attestor?}``, ``core.attestation``) registers with workload
        evidence in place of the launch token or beside it (then the registration descends
        from both, within both ceilings); ``declared`` is what the agent says of itself
        (``model``, ``runtime``, ``sdk``), carried apart in the ``attest`` claim.
        ``authorization_details`` (RFC 9396) are structured grants asked for besides
        ``requested_scope`` (either may be absent, not both): each within the launch
        token's (or attestation policy's) scopes and grants. A
        registration over mTLS binds the token to the client certificate, one with a DPoP
        proof (``ctx.dpop``) to the proof's key (``cnf``); delegated tokens for this agent
        are bound the same way.

        Every field is checked first (400), then the launch token and scope ceiling
        (401/403), then the nonce and the signature; the nonce, the launch token, the
        agent record and the audit events are then committed in one transaction. A
        refusal consumes no launch token and spends the nonce (module docstring).
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
                attestation=attestation,
                declared=declared,
                authorization_details=authorization_details,
                deny=self._kernel.deny,
            )
            try:
                if pending.unit is not None:
                    self._kernel.commit(pending.unit)
            except (Unauthorized, InvalidDPoPProof) as exc:
                self._kernel.commit(pending.lost(exc))
                raise exc from None
            pending.raise_refused()
        except TaskleaseError:
            self._metrics.registrations.labels("failure").inc()
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
        attestation: object = None,
        declared: object = None,
        authorization_details: object = None,
    ) -> PendingRegistration:
        """The first half of :meth:`register` for an event loop: checks and signing only.

        Writes nothing and never waits for a commit: an audited refusal, or a malformed
        request whose signature verifies (its nonce to spend), comes back as a pending
        result for :meth:`complete_register` to write and raise; any other malformed
        request raises here. It reads the store and verifies a signature, so a loop calls
        it inline only when ``store.local_reads``.
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
                attestation=attestation,
                declared=declared,
                authorization_details=authorization_details,
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
            self._metrics.registrations.labels("failure").inc()
            raise

    async def complete_register(self, pending: PendingRegistration) -> IssuedToken:
        """Write what :meth:`prepare_register` decided (group-committed), then answer."""
        try:
            if pending.refusal is not None:
                # A refusal is written even if the request is cancelled meanwhile: its
                # audit event, or the spent nonce of a failed proof, must not be lost.
                if pending.denial is not None:
                    write = self._kernel.arecord(pending.denial)
                else:
                    write = self._kernel.acommit(pending.unit or _no_change)
                await asyncio.shield(write)
            elif pending.unit is not None:
                try:
                    await self._kernel.acommit(pending.unit)
                except (Unauthorized, InvalidDPoPProof) as exc:
                    await asyncio.shield(self._kernel.acommit(pending.lost(exc)))
                    raise exc from None
                pending.raise_refused()
            if pending.refusal is not None:
                raise pending.refusal
        except TaskleaseError:
            self._metrics.registrations.labels("failure").inc()
            raise
        return self._registered(pending)

    def _registered(self, pending: PendingRegistration) -> IssuedToken:
        if pending.issued is None:  # pragma: no cover - a refusal is raised before this
            raise TypeError("a refused registration has no token")
        self._metrics.registrations.labels("success").inc()
        self._metrics.tokens_issued.labels("agent").inc()
        elapsed = time.perf_counter() - pending.started
        self._metrics.issuance_seconds.labels("register").observe(elapsed)
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
        attestation: object = None,
        declared: object = None,
        authorization_details: object = None,
        deny: Callable[[TaskleaseError, AuditEntry], Exception],
    ) -> PendingRegistration:
        """Check and sign a registration; ``deny`` audits a refusal (or defers it)."""
        started = time.perf_counter()
        cfg = self._config
        with_launch = launch_token is not None and launch_token != ""
        if (with_launch or attestation is None) and (
            not isinstance(launch_token, str) or not launch_token
        ):
            raise InvalidRequest("missing required field: launch_token")
        if not isinstance(nonce, str) or not nonce:
            raise InvalidRequest("missing required field: nonce")
        key = decode_public_key(public_key)
        sig = decode_signature(signature)
        now = self._kernel.now()

        def refuse(exc: TaskleaseError, entry: AuditEntry | None) -> Exception:
            """A refusal from here on spends the nonce, if it is ours and live, with its
            one event; a malformed field's (``entry`` None, not audited) only when the
            signature proves the key, so garbage writes nothing (decision 262). Two answers
            ask for the same request again and do not spend it: a DPoP nonce asked for (RFC
            9449 section 8: the proof is to carry it) and ``Unavailable`` (a task revoked
            moments ago: come back after ``Retry-After``, as the SDK does by itself). Their
            nonce is kept for registration instead, so their signature resumes no agent
            (decision 268). A malformed request whose nonce is spent writes to the store
            with no audited refusal to pay for it, and anyone can sign a free challenge
            with a key of their own: it spends one of its client's budget of refusals as
            an audited one does, so the write is bounded like theirs."""
            again = isinstance(exc, (UseDPoPNonce, Unavailable))
            until = self._nonces.live(nonce, now)
            proven = entry is not None and not again
            if until is None or (not proven and not verify_possession(key, nonce, sig)):
                return exc if entry is None else deny(exc, entry)
            if entry is None:
                charge_refusal()
            events = () if entry is None else (with_denial(exc, entry),)
            unit = (reserving if again else spending)(nonce, until + cfg.clock_skew, *events)
            if deny is _defer_denial:
                return _Refused(exc, unit=unit)
            self._kernel.commit(unit)
            return exc

        try:
            orch = validate_segment(orch_id, field="orch_id")
            task = validate_segment(task_id, field="task_id")
            details = self._kernel.grant_types.check(
                authorization_details, field="authorization_details"
            )
            if requested_scope is None or requested_scope == []:
                if not details:
                    raise InvalidRequest("missing required field: requested_scope")
                scope: tuple[str, ...] = ()
            else:
                scope = validate_scopes(requested_scope, field="requested_scope")
            named_resource = validate_resource(resource, field="resource")
            declaration = declared_facts(declared)
            if attestation is not None:
                check_attestation(attestation)
        except TaskleaseError as exc:
            raise refuse(exc, None) from None
        iat = int(now)
        base = AuditEntry(
            event_type="registration_failed",
            outcome="denied",
            task_id=task,
            orch_id=orch,
            request_id=ctx.request_id,
        )
        record: LaunchTokenRecord | None = None
        lt_hash = ""
        parent: Parent | None = None
        if isinstance(launch_token, str) and launch_token:
            record, lt_hash, parent = self._inputs.launch_parent(
                launch_token, key, now, base, refuse
            )
        attested: AttestationOutcome | None = None
        if attestation is not None:
            attested = self._inputs.attested(attestation, declaration, iat, base, refuse)
        elif declaration and parent is not None:
            # A launch token's agent may declare facts too; nothing is attested.
            claim = Attestation(LAUNCH_TOKEN, declared=declaration)
            parent = replace(parent, attest=claim.as_json())
        try:
            if attested is not None:
                parent = (
                    attested.parent if parent is None else joint_parent(parent, attested.parent)
                )
            if parent is None:  # pragma: no cover - one of the two is required above
                raise InvalidRequest("missing required field: launch_token")
            # The app its launch token or attestor is of (the kernel refuses two).
            app_id = registration_app(parent)
            issuance = self._kernel.check_issuance(
                "register",
                parent,
                holder="",
                scope=scope,
                iat=iat,
                requested_ttl=clamp_ttl(parent.ttl, cfg.default_ttl, cfg),
                # The kernel holds the parent to its app's current ceiling (and refuses
                # a removed app): the app is an ancestor named in the parent's lineage.
                resource=named_resource,
                details=details,
                actor=actor_of(record, lt_hash, attested, app_id),
            )
        except Refusal as refusal:
            if refusal.event_type == "audience":
                raise refuse(
                    refusal.error,
                    replace(
                        base,
                        event_type="registration_policy_violation",
                        detail=f"resource refused: {reason_text(refusal.error.detail)} "
                        f"{detail_field('requested', named_resource)} "
                        f"allowed={listed(parent.audience if parent else ())}",
                    ),
                ) from None
            if refusal.event_type == "attenuation" and parent is not None:
                self._metrics.scope_rejections.labels("/v1/register").inc()
                allowed = parent.scope if refusal.allowed is None else refusal.allowed
                what = (
                    f"scope violation: requested {listed(scope)} exceeds allowed {listed(allowed)}"
                )
                if allowed != parent.scope:
                    what += f" (its app's ceiling now; launched with {listed(parent.scope)})"
                if refusal.detail.startswith("grants would widen"):
                    what = f"grants violation: {refusal.detail}"
                raise refuse(
                    refusal.error,
                    replace(
                        base,
                        event_type="registration_policy_violation",
                        detail=f"{what}{policy_of(refusal.detail)}{attested_suffix(attested)}",
                    ),
                ) from None
            if refusal.event_type == "policy":
                raise refuse(
                    refusal.error,
                    replace(
                        base,
                        event_type="registration_policy_violation",
                        detail=f"{refusal.detail}{attested_suffix(attested)}",
                    ),
                ) from None
            if refusal.event_type == "apps":
                raise refuse(
                    refusal.error,
                    replace(
                        base, detail=f"{refusal.detail} ({lt_hash[:12]}){attested_suffix(attested)}"
                    ),
                ) from None
            if record is None:
                # The attestor's app was removed, or an ancestor revoked.
                raise refuse(
                    Unauthorized("attestation refused"),
                    replace(base, detail=f"{refusal.detail}{attested_suffix(attested)}"),
                ) from None
            # The launch token's app was removed: the token is as dead as an unknown one.
            raise refuse(
                Unauthorized("launch token: launch token not found"),
                replace(base, detail=f"{refusal.detail} ({lt_hash[:12]})"),
            ) from None
        held = parent  # what the kernel held to its apps, again in the unit
        audience = issuance.audience
        cnf, proof = self._inputs.binding(ctx, now, base, refuse)
        try:
            nonce_expiry = self._nonces.check(nonce, now)
        except Unauthorized as exc:
            raise deny(
                exc, replace(base, detail=f"nonce refused: {reason_text(exc.reason)}")
            ) from None
        n_hash = nonce_hash(nonce)
        if not verify_possession(key, nonce, sig):
            raise refuse(
                Unauthorized("nonce signature verification failed"),
                replace(base, detail="nonce signature verification failed"),
            )

        agent_id = str(new_agent_id(cfg.trust_domain, orch, task))
        client_id = "admin" if attested is None or record is not None else "attestor"
        if app_id:
            app = self._store.get_app(app_id)
            client_id = app.client_id if app is not None else app_id
        principal = issuance.principal
        token, claims = mint_granted(
            self._keys,
            cfg,
            issuance,
            iat=iat,
            ids=self._kernel.token_ids,
            sub=agent_id,
            aud=audience,
            client_id=client_id,
            task_id=task,
            orch_id=orch,
            agent_key=key,
            cnf=cnf or None,
        )
        token, reference = size_adapted(token, claims, cfg)
        agent = AgentRecord(
            agent_id=agent_id,
            public_key=key,
            orch_id=orch,
            task_id=task,
            scope=scope,
            app_id=app_id,
            client_id=client_id,
            registered_at=now,
            cnf=json.dumps(cnf, separators=(",", ":"), sort_keys=True) if cnf else "",
            audience=audience if audience != cfg.audience else (),
            token_ttl=parent.ttl,
            allow_resume=parent.resumable and (record is None or record.allow_resume),
            authorization_details=issuance.details,
            attest=(
                json.dumps(issuance.attest, separators=(",", ":"), sort_keys=True)
                if issuance.attest
                else ""
            ),
            ceiling=issuance.max_exp,
            # What it descends from, kept: its standing and what is handed to it end with
            # each (``lineage.agent_lineage``), a federated domain's end included.
            lineage=issuance.lineage,
        )
        budgets = registration_budgets(
            agent_id,
            issuance.details,
            parent.details,
            expires_at=issuance.max_exp + cfg.clock_skew,
            rules=self._kernel.grant_types.rules({str(d["type"]) for d in issuance.details}),
        )
        suffix = f" app_id={app_id}" if app_id else ""
        suffix += binding_suffix(claims, reference) + issuance.decision
        origin = f" launch_token={lt_hash[:12]}" if record is not None else ""
        origin += attested_suffix(attested)

        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            refused.clear()
            # The task's entry and every lineage ancestor's, in one lookup: its SPIFFE ID
            # is new and random.
            wait, ancestor = self._kernel.reissue_wait_or_revoked_in(
                tx, claims, wait_on=("task", task), iat=iat, read=[("agent", agent_id)]
            )
            if wait:
                # The task was revoked moments ago, here or on another replica (its entry
                # read through this write): the entry covers what every clock within the
                # skew made before it, so a run registered now would be born revoked
                # (docs/decisions.md 142, 353). Nothing is spent: the nonce is kept for
                # this registration, to be asked again after ``Retry-After``.
                error = Unavailable(
                    f"task {task} was revoked moments ago: a new run of it may register in "
                    f"{wait} s",
                    retry_after=wait,
                )
                refused.append(error)
                denial = with_denial(
                    error,
                    replace(
                        base,
                        detail=f"task revoked moments ago: its entry ends registrations until "
                        f"{iat + wait - 1}; come back in {wait}s{attested_suffix(attested)}",
                    ),
                )
                return reserving(nonce, nonce_expiry + cfg.clock_skew, denial)(tx)
            # An ancestor in its lineage (its app, attestation, federated domain) ended by
            # a chain entry another replica committed, not applied here yet: refused as the
            # kernel's check refuses it there, the nonce spent.
            if ancestor is not None:
                raise Unauthorized(
                    "attestation refused"
                    if record is None
                    else "launch token: launch token not found",
                    reason=f"ancestor {read_in_write(ancestor)}{origin}",
                )
            if not tx.consume_nonce(n_hash, nonce_expiry + cfg.clock_skew):
                raise Unauthorized("nonce: nonce already consumed")
            if proof is not None and not tx.consume_dpop_proof(proof.key, proof.expires_at):
                raise InvalidDPoPProof("invalid DPoP proof", reason=PROOF_REPLAYED)
            if record is not None and not tx.consume_launch_token(lt_hash, now):
                # Spent meanwhile, or its creator ended since it was checked (removed,
                # re-keyed, its tokens revoked): the end committed first, so it wins.
                ended = self._inputs.creator_revoked_in(tx, record)
                if ended:
                    raise Unauthorized(
                        "launch token: launch token revoked", reason=f"{ended} ({lt_hash[:12]})"
                    )
                raise Unauthorized("consume launch token: launch token already consumed")
            # Its app removed or narrowed since it was checked: the change wins too.
            narrowed = self._kernel.held_to_apps(tx, held, scope, details)
            if narrowed:
                raise Unauthorized("registration refused", reason=f"{narrowed}{origin}")
            if attested is not None:
                used = attested.attested
                # Single use within its validity: by a hash, never the evidence itself.
                if not tx.consume_evidence(used.replay_key, used.valid_until + cfg.clock_skew):
                    raise Unauthorized(
                        "attestation refused",
                        reason=f"evidence already used{attested_suffix(attested)}",
                    )
            tx.insert_agent(agent)
            for budget in budgets:
                tx.put_call_budget(budget)
            if reference is not None:
                tx.insert_reference_token(reference)
            tx.put_agent_session(new_session(cfg, agent_id, principal, now))
            ids = AuditEntry(
                "",
                agent_id=agent_id,
                task_id=task,
                orch_id=orch,
                app_id=app_id,
                principal_ref=principal_ref(principal),
            )
            return [
                replace(
                    ids,
                    event_type="agent_registered",
                    detail=f"Agent registered with scope {listed(scope)}{suffix} "
                    f"{detail_field('principal', principal)} "
                    f"principal_ref={principal_ref(principal)}"
                    f"{origin}",
                    request_id=ctx.request_id,
                ),
                replace(
                    ids,
                    event_type="token_issued",
                    detail=f"Token issued, jti={claims.jti}, ttl={claims.exp - claims.iat}{suffix}",
                    request_id=ctx.request_id,
                ),
            ]

        return PendingRegistration(
            unit,
            IssuedToken(token, claims),
            base,
            started,
            nonce=nonce,
            nonce_until=nonce_expiry + cfg.clock_skew,
            refused=refused,
        )
