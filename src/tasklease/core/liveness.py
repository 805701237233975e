"""Agent sessions: heartbeat liveness, the silent-agent sweeper, and crash resumption.

Every registered agent has an :class:`~tasklease.core.store.AgentSession` beside its
registration: the principal its tokens carry, whether it is under heartbeat supervision,
when it last proved it is alive, how often it resumed after a crash, and its state.

* **Heartbeat** (``POST /v1/heartbeat``): the agent presents its bearer token *and* a
  fresh Ed25519 signature by its registered key over :func:`heartbeat_signing_input`
  (domain-separated; binds the agent, the presented token's ``jti``, a timestamp within
  the clock skew and a single-use proof ``jti``). A stolen bearer token alone cannot keep
  a dead agent alive. The first heartbeat opts the agent in to supervision (with
  ``heartbeat_required`` every agent is supervised from registration). ``done`` declares
  the agent finished: it leaves supervision and gives its presented token up.
* **Sweeper** (:func:`sweep_silent_agents`, run by the server's background loop): an
  agent whose last heartbeat is older than ``heartbeat_interval x heartbeat_misses`` is
  revoked at level ``agent`` - its own tokens and every token delegated from it - with an
  ``agent_silent_revoked`` audit event that says why. One sweeper at a time across
  replicas (a lease row); each revocation is conditional on the session still being
  silent and active inside its own transaction, so no agent is revoked twice.
* **Resume** (``POST /v1/resume``): an agent that restarts within its task signs a nonce
  from ``GET /v1/challenge`` with its registered key (exactly as at registration) and gets
  a fresh token for the same SPIFFE ID, scope and principal, without a launch token. The
  original registration time stays ``oiat``, so the renewal ceiling still bounds the
  task; each resumption counts as a renewal (at most ``max_renewals``). A revoked,
  released or swept agent cannot resume, and a different key is refused and audited.

Routine heartbeats are counted in metrics, not audited: an event every 30 s per agent
would bury the log (the complaint in hashicorp/vault#6492). Opting in, declaring done,
every refusal and every sweep are audited.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from nacl.signing import VerifyKey

from tasklease.core import _jws
from tasklease.core.audit import AuditEntry
from tasklease.core.clock import format_rfc3339
from tasklease.core.config import Config
from tasklease.core.errors import (
    Forbidden,
    InvalidRequest,
    TaskleaseError,
    Unauthorized,
)
from tasklease.core.identity import decode_signature, nonce_hash, verify_possession
from tasklease.core.kernel import (
    IssuedToken,
    Parent,
    Refusal,
    RequestContext,
    app_ancestor,
    check_issuance,
    ending_records,
    with_denial,
)
from tasklease.core.spiffe import parse_agent_id
from tasklease.core.store import AgentSession, RevocationRecord, WriteTx
from tasklease.core.tokens import KIND_AGENT, Claims, mint

if TYPE_CHECKING:
    from tasklease.core.broker import Broker

__all__ = [
    "HEARTBEAT_CONTEXT",
    "SWEEPER_LEASE",
    "heartbeat",
    "heartbeat_signing_input",
    "new_session",
    "resume",
    "sweep_silent_agents",
]

HEARTBEAT_CONTEXT = b"tasklease-heartbeat-v1\n"
SWEEPER_LEASE = "liveness-sweeper"
SWEEP_BATCH = 100
_PROOF_JTI = re.compile(r"[A-Za-z0-9_-]{16,64}")
_REFUSED = "resume refused"


def new_session(config: Config, agent_id: str, principal: str, now: float) -> AgentSession:
    """The session of a freshly registered agent (supervised iff the config requires it)."""
    return AgentSession(
        agent_id=agent_id,
        principal=principal,
        heartbeat_required=config.heartbeat_required,
        last_heartbeat=now,
        resumes=0,
        state="active",
        # Nothing of this agent can be valid or resumable after the renewal ceiling; a
        # token delegated to it lives at most max_ttl beyond that.
        expires_at=now + config.renewal_ceiling + config.max_ttl + config.clock_skew + 1,
    )


def heartbeat_signing_input(
    agent_id: str, token_jti: str, timestamp: int, proof_jti: str, done: bool
) -> bytes:
    """The exact bytes an agent signs for ``POST /v1/heartbeat`` (known-answer tested).

    ``"tasklease-heartbeat-v1\\n" || JSON [agent_id, token_jti, timestamp, proof_jti, done]``
    (compact, UTF-8). The prefix keeps a heartbeat signature from ever being accepted as
    a registration, resume, handshake or discovery signature, and the reverse.
    """
    body = json.dumps([agent_id, token_jti, timestamp, proof_jti, done], separators=(",", ":"))
    return HEARTBEAT_CONTEXT + body.encode("utf-8")


# --- heartbeat ------------------------------------------------------------------------------


def heartbeat(
    broker: Broker,
    claims: Claims,
    *,
    timestamp: object,
    proof_jti: object,
    signature: object,
    done: object,
    ctx: RequestContext,
) -> AgentSession:
    """Record a heartbeat (or the agent's declaration that it is done).

    Raises:
        InvalidRequest: a field is missing or malformed.
        Unauthorized: the proof does not verify with the registered key, is stale or
            replayed (audited as ``heartbeat_denied``).
        Forbidden: the agent is revoked, released or swept (audited).
    """
    cfg = broker.config
    if type(timestamp) is not int:
        raise InvalidRequest("missing required field: timestamp (integer Unix seconds)")
    if not isinstance(proof_jti, str) or _PROOF_JTI.fullmatch(proof_jti) is None:
        raise InvalidRequest("jti must be 16 to 64 characters of [A-Za-z0-9_-]")
    if done is not None and not isinstance(done, bool):
        raise InvalidRequest("done must be a boolean")
    finished = done is True
    sig = decode_signature(signature)
    now = broker.kernel.now()
    base = AuditEntry(
        "heartbeat_denied",
        outcome="denied",
        agent_id=claims.sub,
        task_id=claims.task_id,
        orch_id=claims.orch_id,
        request_id=ctx.request_id,
    )
    agent, why = broker.kernel.agent_standing(claims.sub)
    if agent is None or why:
        raise broker.kernel.deny(
            Forbidden("agent is not active"), replace(base, detail=f"heartbeat refused: {why}")
        )
    if abs(now - timestamp) > cfg.clock_skew:
        raise broker.kernel.deny(
            Unauthorized("heartbeat proof verification failed"),
            replace(base, detail=f"heartbeat timestamp {timestamp} outside the clock skew"),
        )
    message = heartbeat_signing_input(claims.sub, claims.jti, timestamp, proof_jti, finished)
    if not _jws.verify_detached(message, sig, VerifyKey(agent.public_key)):
        raise broker.kernel.deny(
            Unauthorized("heartbeat proof verification failed"),
            replace(base, detail="heartbeat signature does not verify with the registered key"),
        )
    proof_hash = hashlib.sha256(f"heartbeat\n{claims.sub}\n{proof_jti}".encode()).hexdigest()
    # Done is a release: the token ends, and every token delegated from it.
    ending = ending_records(claims, math.floor(now), cfg)
    result: list[AgentSession] = []

    def unit(tx: WriteTx) -> list[AuditEntry]:
        if not tx.consume_nonce(proof_hash, timestamp + 2 * cfg.clock_skew + 1):
            raise Unauthorized("heartbeat proof verification failed", reason="proof replayed")
        session = tx.get_agent_session(claims.sub) or new_session(
            cfg, claims.sub, claims.principal, agent.registered_at
        )
        if session.state != "active":
            raise Forbidden("agent is not active", reason=f"agent session is {session.state}")
        updated = replace(
            session,
            last_heartbeat=now,
            heartbeat_required=True,
            state="released" if finished else "active",
        )
        tx.put_agent_session(updated)
        result.append(updated)
        ids = replace(base, outcome="success", detail="")
        if finished:
            for record in ending:
                tx.insert_revocation(record)
            return [
                replace(
                    ids,
                    event_type="agent_released",
                    detail=f"agent declared itself done; left heartbeat supervision; "
                    f"token released jti={claims.jti}",
                )
            ]
        if not session.heartbeat_required:
            return [
                replace(
                    ids,
                    event_type="heartbeat_started",
                    detail=f"agent under heartbeat supervision: interval="
                    f"{cfg.heartbeat_interval:g}s misses={cfg.heartbeat_misses}",
                )
            ]
        return []

    try:
        broker.kernel.commit(unit)
    except (Unauthorized, Forbidden) as exc:
        raise broker.kernel.deny(
            exc, replace(base, detail=f"heartbeat refused: {exc.reason}")
        ) from None
    if finished:
        broker.kernel.apply_revocations(ending)
    return result[0]


# --- the sweeper ---------------------------------------------------------------------------


def sweep_silent_agents(broker: Broker, holder: str) -> list[str]:
    """Revoke (level ``agent``) every supervised agent silent for interval x misses.

    Returns the agents revoked by this call. Does nothing (returns ``[]``) unless this
    process holds the sweeper lease, so replicas sharing a store never sweep at once; and
    each revocation re-reads the session inside its transaction, so an agent that
    heartbeated meanwhile, or was swept already, is left alone.
    """
    cfg = broker.config
    now = broker.kernel.now()
    granted: list[bool] = []

    def lease(tx: WriteTx) -> list[AuditEntry]:
        granted.append(
            tx.acquire_lease(SWEEPER_LEASE, holder, now, now + 2 * cfg.heartbeat_interval)
        )
        return []

    broker.kernel.commit(lease)
    if not granted[0]:
        return []
    allowed = cfg.heartbeat_interval * cfg.heartbeat_misses
    bound = now - allowed
    revoked: list[str] = []
    for candidate in broker.store.silent_agents(bound, SWEEP_BATCH):
        if _sweep_one(broker, candidate.agent_id, now, bound):
            revoked.append(candidate.agent_id)
    return revoked


def _sweep_one(broker: Broker, agent_id: str, now: float, bound: float) -> bool:
    """Revoke one silent agent unless it heartbeated or was swept meanwhile."""
    cfg = broker.config
    revoked_at = math.floor(now)
    record = RevocationRecord(
        "agent", agent_id, revoked_at, broker.kernel.revocation_expiry(revoked_at)
    )
    swept: list[bool] = []

    def unit(tx: WriteTx) -> list[AuditEntry]:
        session = tx.get_agent_session(agent_id)
        if (
            session is None
            or session.state != "active"
            or not session.heartbeat_required
            or session.last_heartbeat >= bound
        ):
            return []  # it heartbeated, was released or was swept meanwhile
        tx.insert_revocation(record)
        tx.set_agent_status(agent_id, "revoked")
        tx.put_agent_session(replace(session, state="silent_revoked"))
        swept.append(True)
        agent = broker.store.get_agent(agent_id)
        allowed = cfg.heartbeat_interval * cfg.heartbeat_misses
        return [
            AuditEntry(
                "agent_silent_revoked",
                outcome="success",
                agent_id=agent_id,
                task_id=agent.task_id if agent else "",
                orch_id=agent.orch_id if agent else "",
                detail=f"no heartbeat since {format_rfc3339(session.last_heartbeat)} "
                f"({now - session.last_heartbeat:.0f}s silent; allowed "
                f"{cfg.heartbeat_misses} misses x {cfg.heartbeat_interval:g}s = "
                f"{allowed:g}s): revoked at level agent, with every token delegated "
                "from it | by=liveness-sweeper",
            )
        ]

    broker.kernel.commit(unit)
    if not swept:
        return False
    broker.kernel.apply_revocations([record])
    broker.metrics.tokens_revoked.labels("agent").inc()
    return True


# --- resume --------------------------------------------------------------------------------


def resume(
    broker: Broker,
    *,
    agent_id: object,
    nonce: object,
    signature: object,
    ctx: RequestContext,
) -> IssuedToken:
    """A fresh token for a registered agent that proves possession of its registered key.

    Raises:
        InvalidRequest: a field is missing or malformed.
        Unauthorized: the nonce is unknown, expired or used; the agent is unknown; or the
            signature does not verify with the registered key (an impostor) - audited.
        Forbidden: the agent is revoked, released or swept (audited).
        RenewalCeilingExceeded / RenewalCountExceeded: the task's ceiling is reached, or
            it resumed ``max_renewals`` times (audited).
    """
    cfg = broker.config
    if not isinstance(agent_id, str) or not agent_id:
        raise InvalidRequest("missing required field: agent_id")
    if not isinstance(nonce, str) or not nonce:
        raise InvalidRequest("missing required field: nonce")
    sig = decode_signature(signature)
    now = broker.kernel.now()
    shown = agent_id[:512]
    base = AuditEntry(
        "agent_resume_denied", outcome="denied", agent_id=shown, request_id=ctx.request_id
    )

    def refuse(exc: TaskleaseError, why: str) -> TaskleaseError:
        return broker.kernel.deny(exc, replace(base, detail=f"resume refused: {why}"))

    try:
        nonce_expiry = broker.nonces.check(nonce, now)
    except Unauthorized as exc:
        raise refuse(exc, f"nonce refused: {exc.reason}") from None
    n_hash = nonce_hash(nonce)
    agent = broker.store.get_agent(agent_id) if parse_agent_id(agent_id) else None
    if agent is None:
        raise refuse(Unauthorized(_REFUSED), "agent not registered")
    base = replace(base, task_id=agent.task_id, orch_id=agent.orch_id)
    if not verify_possession(agent.public_key, nonce, sig):
        failure = Unauthorized(_REFUSED)
        burnt = with_denial(
            failure,
            replace(
                base,
                detail="resume refused: signature does not verify with the agent's "
                "registered key (a different key: impostor)",
            ),
        )

        def burn(tx: WriteTx) -> list[AuditEntry]:
            tx.consume_nonce(n_hash, nonce_expiry + cfg.clock_skew)
            return [burnt]

        broker.kernel.commit(burn)
        raise failure
    _, why = broker.kernel.agent_standing(agent_id)
    if why:
        raise refuse(Forbidden("agent is not active"), why)
    session = broker.store.get_agent_session(agent_id) or new_session(
        cfg, agent_id, "", agent.registered_at
    )
    oiat = int(agent.registered_at)
    iat = int(now)
    ttl_cap = agent.token_ttl or cfg.default_ttl
    try:
        issuance = check_issuance(
            "resume",
            Parent(
                holder=agent_id,
                scope=agent.scope,
                audience=agent.audience or cfg.audience,
                principal=session.principal,
                lineage=(app_ancestor(agent.app_id),) if agent.app_id else (),
                ceiling=oiat + cfg.renewal_ceiling,
                ttl=ttl_cap,
                renewals=session.resumes,
            ),
            holder=agent_id,
            scope=agent.scope,
            iat=iat,
            requested_ttl=ttl_cap,
            config=cfg,
        )
    except Refusal as refusal:
        raise refuse(refusal.error, refusal.detail) from None
    ttl = issuance.ttl(iat)
    token, claims = mint(
        broker.keyring,
        kind=KIND_AGENT,
        iss=cfg.issuer,
        sub=agent_id,
        # The registration's resource and holder binding (the caller proved it already).
        aud=agent.audience or cfg.audience,
        iat=iat,
        ttl=ttl,
        scope=agent.scope,
        client_id=agent.client_id,
        task_id=agent.task_id,
        orch_id=agent.orch_id,
        oiat=oiat,
        rnc=issuance.renewals,
        principal=issuance.principal,
        agent_key=agent.public_key,
        cnf=json.loads(agent.cnf) if agent.cnf else None,
        lineage=issuance.lineage,
        max_exp=issuance.max_exp,
    )

    def unit(tx: WriteTx) -> list[AuditEntry]:
        if not tx.consume_nonce(n_hash, nonce_expiry + cfg.clock_skew):
            raise Unauthorized(_REFUSED, reason="nonce already consumed")
        current = tx.get_agent_session(agent_id) or session
        if current.state != "active" or current.resumes != session.resumes:
            raise Unauthorized(_REFUSED, reason="concurrent resume or session ended")
        tx.put_agent_session(replace(current, resumes=issuance.renewals, last_heartbeat=now))
        ids = replace(base, outcome="success", request_id=ctx.request_id)
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
                detail=f"Token issued, jti={claims.jti}, ttl={ttl} (resume)",
            ),
        ]

    try:
        broker.kernel.commit(unit)
    except Unauthorized as exc:
        raise refuse(exc, exc.reason) from None
    broker.metrics.tokens_issued.labels("resume").inc()
    return IssuedToken(token, claims)
