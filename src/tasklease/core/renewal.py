"""Continuing or ending a lineage: renewal, release, and a restarted agent's resumption.

* **Renew**: a successor with the same lifetime; the predecessor is revoked in the same
  transaction, so two concurrent renewals of one token cannot both win.
* **Release**: the holder gives its token up; every token delegated from it ends too.
* **Resume** (``POST /v1/resume``): an agent that restarts within its task signs a nonce
  from ``GET /v1/challenge`` with its registered key (exactly as at registration) and gets
  a fresh token for the same SPIFFE ID, scope, audience, binding and principal, without a
  launch token. The original registration time stays ``oiat``, so the renewal ceiling
  still bounds the task; each resumption counts as a renewal (at most ``max_renewals``).
  A revoked, released or swept agent cannot resume, nor one whose launch token was
  created with ``allow_resume: false``; a different key is refused and audited.

Renewals and resumptions count on one budget: a registration's own tokens record their
count in its session (``AgentSession.resumes``), which a resumption continues from.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import replace

from tasklease.core.audience import default_audience
from tasklease.core.auditformat import AuditEntry, clipped, reason_text
from tasklease.core.binding import recording
from tasklease.core.callers import about, refused, require_agent
from tasklease.core.delegation import principal_ref
from tasklease.core.errors import Forbidden, InvalidRequest, TaskleaseError, Unauthorized
from tasklease.core.identity import (
    NonceIssuer,
    decode_signature,
    nonce_hash,
    registration_mark,
    spending,
    verify_possession,
)
from tasklease.core.issuing import (
    binding_suffix,
    cnf_of,
    mint_granted,
    size_adapted,
    token_challenge,
)
from tasklease.core.kernel import (
    IssuedToken,
    Kernel,
    Parent,
    RequestContext,
    Service,
    read_in_write,
    with_denial,
)
from tasklease.core.lineage import Refusal, agent_lineage, registration_ceiling
from tasklease.core.liveness import new_session
from tasklease.core.pending import Lost, Pending, complete
from tasklease.core.records import RevocationRecord, RevocationWrite
from tasklease.core.revoking import ended_by_holder
from tasklease.core.signing import SigningKeys
from tasklease.core.spiffe import parse_agent_id
from tasklease.core.store import WriteTx
from tasklease.core.tokens import Claims, agent_key_of
from tasklease.rules.binding import PROOF_REPLAYED, BindingError, DPoPVerifier

__all__ = ["Renewal"]

_REFUSED = "resume refused"


class Renewal(Service):
    """Renew, release and resume. Thread-safe; one per broker."""

    def __init__(
        self, kernel: Kernel, keys: SigningKeys, nonces: NonceIssuer, dpop: DPoPVerifier
    ) -> None:
        super().__init__(kernel)
        self._keys = keys
        self._nonces = nonces
        self._dpop = dpop

    def renew(self, claims: Claims, ctx: RequestContext) -> IssuedToken:
        """Issue a successor with the same lifetime and revoke the predecessor, atomically.

        Refused past ``max_renewals`` (``renewal_count_exceeded``) and once the original
        registration is ``renewal_ceiling`` old (``renewal_ceiling_exceeded``); the
        successor never outlives that ceiling. Two concurrent renewals: exactly one wins.
        """
        return complete(self._kernel, self.prepare_renew(claims, ctx))

    def prepare_renew(self, claims: Claims, ctx: RequestContext) -> Pending[IssuedToken]:
        """:meth:`renew` checked and signed, not written (``core.pending``)."""
        started = time.perf_counter()
        cfg = self._config
        kernel = self._kernel
        require_agent(kernel, claims, "renew", ctx)
        iat = int(kernel.now())
        failed = refused("token_renewal_failed", claims, ctx)
        parent = Parent.of_token(claims, cfg)
        # A registration's own tokens count their renewals in its session too, so that a
        # resumption (which has no token to read the count from) continues the budget.
        own = not claims.delegation_chain
        session = self._store.get_agent_session(claims.sub) if own else None
        if session is not None and session.resumes > parent.renewals:
            parent = replace(parent, renewals=session.resumes)
        # The holder is an ancestor of its successor: in good standing (invariant 1).
        dead = kernel.holder_standing(claims, session) if own else kernel.holder_standing(claims)
        try:
            issuance = self._kernel.check_issuance(
                "renew",
                parent,
                holder=claims.sub,
                scope=claims.scope,
                iat=iat,
                requested_ttl=parent.ttl,
                dead_ancestor=dead,
                details=claims.details,
            )
        except Refusal as refusal:
            raise kernel.deny(
                refusal.error, replace(failed, detail=f"{refusal.detail} jti={claims.jti}")
            ) from None
        token, new_claims = mint_granted(
            self._keys,
            cfg,
            issuance,
            iat=iat,
            ids=self._kernel.token_ids,
            sub=claims.sub,
            aud=claims.aud,
            client_id=claims.client_id,
            task_id=claims.task_id,
            orch_id=claims.orch_id,
            oiat=claims.oiat,
            chain=claims.delegation_chain,
            agent_key=agent_key_of(claims.raw),
            cnf=cnf_of(claims),  # the holder keeps its binding (RFC 8705, RFC 9449)
        )
        token, reference = size_adapted(token, new_claims, cfg)
        predecessor = RevocationRecord("token", claims.jti, iat, claims.exp + cfg.clock_skew + 1)

        def unit(tx: WriteTx) -> list[AuditEntry]:
            ended = kernel.revoked_in(tx, new_claims)
            if ended is not None:
                # Revoked on another replica, whose entry this one has not applied yet
                # (the holder's, its task's, a delegator's, an ancestor's): the successor
                # would be born revoked, as the token is.
                raise Unauthorized(
                    "token verification failed",
                    reason=f"token {read_in_write(ended)}",
                    challenge=token_challenge(claims),
                )
            # Only the first renewal of a token ends it: any entry already on its jti
            # (renewed, or revoked) refuses this one, widened by it or not.
            if tx.insert_revocation(predecessor) is not RevocationWrite.INSERTED:
                raise Unauthorized(
                    "token verification failed",
                    reason="token already renewed or revoked",
                    challenge=token_challenge(claims),
                )
            if own and tx.raise_resumes(claims.sub, issuance.renewals) is False:
                raise Unauthorized(
                    "token verification failed",
                    reason="the lineage was renewed, resumed or released meanwhile",
                    challenge=token_challenge(claims),
                )
            if reference is not None:
                tx.insert_reference_token(reference)
            return [
                replace(
                    about(claims),
                    event_type="token_renewed",
                    request_id=ctx.request_id,
                    detail=f"token renewed for agent={claims.sub} old_jti={claims.jti} "
                    f"new_jti={new_claims.jti} renewals={new_claims.rnc}/{cfg.max_renewals} "
                    f"ttl={issuance.ttl(iat)}{binding_suffix(new_claims, reference)}",
                )
            ]

        def lost(exc: Lost) -> AuditEntry:
            return replace(failed, detail=f"{reason_text(exc.reason)} jti={claims.jti}")

        def done() -> IssuedToken:
            kernel.apply_revocations([predecessor])
            self._metrics.tokens_revoked.labels("renewal").inc()
            self._metrics.tokens_issued.labels("renew").inc()
            self._metrics.issuance_seconds.labels("renew").observe(time.perf_counter() - started)
            return IssuedToken(token, new_claims)

        return Pending(unit, done, lost)

    def release(self, claims: Claims, ctx: RequestContext) -> None:
        """The holder gives its token up (revoked at level ``token``), with its descendants."""
        return complete(self._kernel, self.prepare_release(claims, ctx))

    def prepare_release(self, claims: Claims, ctx: RequestContext) -> Pending[None]:
        """:meth:`release`, not yet written (``core.pending``)."""
        entry = replace(
            about(claims),
            event_type="token_released",
            request_id=ctx.request_id,
            detail=f"token released | jti={claims.jti}",
        )
        return ended_by_holder(self._kernel, claims, entry, "release")

    # --- resume ----------------------------------------------------------------------------

    def resume(
        self, *, agent_id: object, nonce: object, signature: object, ctx: RequestContext
    ) -> IssuedToken:
        """A fresh token for a restarted agent that proves its registered key.

        The token keeps the registration's holder binding (``AgentRecord.cnf``), so the
        request must prove it again (its client certificate and/or a DPoP proof for the
        registered key, without ``ath``), and the registration's audience.

        Raises:
            InvalidRequest: a field is missing or malformed.
            Unauthorized: the binding is not proven; the nonce is unknown, expired or
                used; the agent is unknown; or the signature does not verify with the
                registered key (an impostor) - audited.
            Forbidden: the agent is revoked, released or swept, or its launch token
                switched resumption off (audited).
            RenewalCeilingExceeded / RenewalCountExceeded: the task's ceiling is reached,
                or its lineage was renewed or resumed ``max_renewals`` times (audited).
        """
        return complete(
            self._kernel,
            self.prepare_resume(agent_id=agent_id, nonce=nonce, signature=signature, ctx=ctx),
        )

    def prepare_resume(
        self, *, agent_id: object, nonce: object, signature: object, ctx: RequestContext
    ) -> Pending[IssuedToken]:
        """:meth:`resume` checked and signed, not written (``core.pending``). Under
        ``core.audit.deferring`` its refusals' events and the record of its DPoP proof as
        used are deferred too; a spent nonce (an impostor's) is written by its unit."""
        kernel = self._kernel
        cfg = self._config
        agent = (
            self._store.get_agent(agent_id)
            if isinstance(agent_id, str) and parse_agent_id(agent_id)
            else None
        )
        cnf: dict[str, str] = json.loads(agent.cnf) if agent is not None and agent.cnf else {}
        if not isinstance(agent_id, str) or not agent_id:
            raise InvalidRequest("missing required field: agent_id")
        if not isinstance(nonce, str) or not nonce:
            raise InvalidRequest("missing required field: nonce")
        sig = decode_signature(signature)
        now = kernel.now()
        base = AuditEntry(
            "agent_resume_denied",
            outcome="denied",
            agent_id=clipped(agent_id, 512),
            request_id=ctx.request_id,
        )

        def refuse(exc: TaskleaseError, why: str) -> TaskleaseError:
            return kernel.deny(exc, replace(base, detail=f"resume refused: {reason_text(why)}"))

        try:
            nonce_expiry = self._nonces.check(nonce, now)
        except Unauthorized as exc:
            raise refuse(exc, f"nonce refused: {exc.reason}") from None
        n_hash = nonce_hash(nonce)

        def spent(exc: TaskleaseError, why: str) -> Pending[IssuedToken]:
            """A refusal from here on: the nonce spent with its one event, so the
            signature over it registers no agent either (decision 262)."""
            denial = with_denial(exc, replace(base, detail=f"resume refused: {reason_text(why)}"))

            def refused() -> IssuedToken:
                raise exc

            return Pending(spending(nonce, nonce_expiry + cfg.clock_skew, denial), refused)

        # A DPoP proof presented is checked, and spent, whoever the request names: spent
        # for a bound agent alone, or only once its key is proven, it would either tell a
        # bound agent's id from one no agent has or outlive an impostor's use of it.
        proof = self._presented_proof(base, ctx)
        # Checked for an unknown agent too (against no one's key): the time does not say.
        proven = verify_possession(agent.public_key if agent is not None else None, nonce, sig)
        if agent is None:
            return spent(Unauthorized(_REFUSED), "agent not registered")
        base = replace(base, task_id=agent.task_id, orch_id=agent.orch_id, app_id=agent.app_id)
        if not proven:
            return spent(
                Unauthorized(_REFUSED),
                "signature does not verify with the agent's registered key "
                "(a different key: impostor)",
            )
        # The binding only once the key is proven: checked before, it told a bound
        # agent's id from one no agent has to anyone, without a nonce or a key.
        unproven = _unproven_binding(cnf, ctx, proof) if cnf else ""
        if unproven:
            return spent(Unauthorized(_REFUSED, reason=unproven), unproven)
        _, why = kernel.agent_standing(agent_id, lifetime=False)
        if why:
            return spent(Forbidden("agent is not active"), why)
        session = self._store.get_agent_session(agent_id) or new_session(
            cfg, agent_id, "", agent.registered_at
        )
        oiat = int(agent.registered_at)
        iat = int(now)
        ttl_cap = agent.token_ttl or cfg.default_ttl
        try:
            issuance = self._kernel.check_issuance(
                "resume",
                Parent(
                    holder=agent_id,
                    scope=agent.scope,
                    details=agent.authorization_details,
                    audience=agent.audience or default_audience(cfg.audience),
                    principal=session.principal,
                    # Its standing checked above: its lineage is readable.
                    lineage=agent_lineage(agent) or (),
                    ceiling=registration_ceiling(agent, cfg),
                    ttl=ttl_cap,
                    renewals=session.resumes,
                    resumable=agent.allow_resume,
                    # What the registration carried: a resumption is the same lineage.
                    attest=json.loads(agent.attest) if agent.attest else None,
                ),
                holder=agent_id,
                scope=agent.scope,
                iat=iat,
                requested_ttl=ttl_cap,
                details=agent.authorization_details,
            )
        except Refusal as refusal:
            return spent(refusal.error, refusal.detail)
        token, claims = mint_granted(
            self._keys,
            cfg,
            issuance,
            iat=iat,
            ids=self._kernel.token_ids,
            sub=agent_id,
            # The registration's resource and holder binding (the caller proved it already).
            aud=agent.audience or default_audience(cfg.audience),
            client_id=agent.client_id,
            task_id=agent.task_id,
            orch_id=agent.orch_id,
            oiat=oiat,
            agent_key=agent.public_key,
            cnf=cnf or None,
        )
        # Too large a token is issued by reference, as at registration and renewal.
        token, reference = size_adapted(token, claims, cfg)

        lost_race: list[Unauthorized | Forbidden] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            if not tx.consume_nonce(registration_mark(nonce), nonce_expiry + cfg.clock_skew):
                # A registration was asked to come again with this signature (decision
                # 268): refused, and the nonce left for that registration.
                lost_race.append(Unauthorized(_REFUSED))
                why = "the nonce was presented to a registration asked to come again"
                return [
                    with_denial(
                        lost_race[0], replace(base, detail=f"resume refused: {reason_text(why)}")
                    )
                ]
            if not tx.consume_nonce(n_hash, nonce_expiry + cfg.clock_skew):
                raise Unauthorized(_REFUSED, reason="nonce already consumed")
            current = tx.get_agent_session(agent_id) or session
            if current.state != "active" or current.resumes != session.resumes:
                # Refused, and the nonce stays spent: nothing raised undoes it.
                lost_race.append(Unauthorized(_REFUSED))
                why = "concurrent resume or session ended"
                return [
                    with_denial(
                        lost_race[0], replace(base, detail=f"resume refused: {reason_text(why)}")
                    )
                ]
            ended = kernel.revoked_in(tx, claims)
            if ended is not None:
                # Revoked on another replica, whose entry this one has not applied yet: as
                # the standing read above refuses it, and the nonce stays spent.
                lost_race.append(Forbidden("agent is not active"))
                why = f"agent {read_in_write(ended)}"
                return [
                    with_denial(
                        lost_race[0], replace(base, detail=f"resume refused: {reason_text(why)}")
                    )
                ]
            tx.put_agent_session(replace(current, resumes=issuance.renewals, last_heartbeat=now))
            if reference is not None:
                tx.insert_reference_token(reference)
            ids = replace(
                base,
                outcome="success",
                request_id=ctx.request_id,
                principal_ref=principal_ref(current.principal) if current.principal else "",
            )
            return [
                replace(
                    ids,
                    event_type="agent_resumed",
                    detail=f"agent resumed with its registered key; renewals="
                    f"{issuance.renewals}/{cfg.max_renewals} oiat={oiat}",
                ),
                replace(
                    ids,
                    event_type="token_issued",
                    detail=f"Token issued, jti={claims.jti}, ttl={issuance.ttl(iat)} (resume)"
                    f"{binding_suffix(claims, reference)}",
                ),
            ]

        def done() -> IssuedToken:
            if lost_race:
                raise lost_race[0]
            self._metrics.tokens_issued.labels("resume").inc()
            return IssuedToken(token, claims)

        def lost(exc: Lost) -> AuditEntry:
            return replace(base, detail=f"resume refused: {reason_text(exc.reason)}")

        return Pending(unit, done, lost)

    def _presented_proof(self, base: AuditEntry, ctx: RequestContext) -> str | BindingError:
        """The key a resumption's DPoP proof proves, or why it proves none (no proof at all
        included: what a bound agent's resumption lacks). A proof that verifies is recorded
        as used, whoever the request names and refused or not; under
        ``core.audit.deferring`` with the request's deferred events, where one used before
        then refuses the request."""
        if not ctx.dpop:
            return BindingError("resume without the registration's DPoP proof")
        dpop, deferred = recording(self._dpop, ctx.dpop)
        try:
            return dpop.verify(ctx.dpop, htm=ctx.method, htu=ctx.url, now=self._kernel.now())
        except BindingError as exc:
            return exc
        finally:
            if deferred is not None:  # a proof checked before a refusal is spent by it too
                deferred.defer(
                    lambda: (
                        Unauthorized(_REFUSED, reason=PROOF_REPLAYED),
                        replace(base, detail=f"resume refused: {PROOF_REPLAYED}"),
                    )
                )


def _unproven_binding(cnf: dict[str, str], ctx: RequestContext, proof: str | BindingError) -> str:
    """Why a resumption does not prove the registration's binding (``cnf``), or "" when
    it does. Asked only of a caller that proved the agent's key (the same refusal as any
    other then: the nonce spent with one event); ``proof`` is what its DPoP proof proved
    (``Renewal._presented_proof``)."""
    x5t = cnf.get("x5t#S256")
    if x5t is not None and not hmac.compare_digest(ctx.cert_thumbprint.encode(), str(x5t).encode()):
        return "resume without the registration's client certificate"
    jkt = cnf.get("jkt")
    if jkt is not None:
        if isinstance(proof, BindingError):
            return proof.reason
        if not hmac.compare_digest(proof.encode(), str(jkt).encode()):
            return "resume DPoP proof signed by another key"
    return ""
