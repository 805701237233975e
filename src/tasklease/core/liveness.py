"""Agent sessions: heartbeat liveness and the silent-agent sweeper.

Every registered agent has an :class:`~tasklease.core.store.AgentSession` beside its
registration: the principal its tokens carry, whether it is under heartbeat supervision,
when it last proved it is alive, how often it resumed after a crash, and its state.

* **Heartbeat** (``POST /v1/heartbeat``): the agent presents its bearer token *and* a
  fresh Ed25519 signature by its registered key over :func:`heartbeat_signing_input`
  (domain-separated; binds the agent, the presented token - its ``jti``, or a
  by-reference token's hash, which its holder can compute - a timestamp within
  the clock skew and a single-use proof ``jti``). A stolen bearer token alone cannot keep
  a dead agent alive. The first heartbeat opts the agent in to supervision (with
  ``heartbeat_required`` every agent is supervised from registration). ``done`` declares
  the agent finished: it leaves supervision and gives its presented token up.
* **Sweeper** (:func:`sweep_silent_agents`, run by the server's background loop): an
  agent whose last heartbeat is older than ``heartbeat_interval x heartbeat_misses`` is
  revoked at level ``agent`` - its own tokens and every token delegated from it - with an
  ``agent_silent_revoked`` audit event that says why. Silence is measured by the wall
  clock, never ahead of the time elapsed since the broker started: a clock that jumps
  ahead neither sweeps live agents nor keeps the lease from the others. One sweeper at a
  time across replicas (a lease row, given up when its broker stops); each revocation is
  conditional on the session still being silent and active inside its own transaction,
  so no agent is revoked twice.
* **Resume**: an agent that restarts within its task proves its registered key again and
  continues its session (``core.renewal``).

Routine heartbeats are counted in metrics, not audited: an event every 30 s per agent
would bury the log (the complaint in hashicorp/vault#6492). Opting in, declaring done,
every refusal and every sweep are audited.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import replace

from nacl.signing import VerifyKey

from tasklease.core.auditformat import AuditEntry, reason_text
from tasklease.core.callers import refused, require_agent
from tasklease.core.clock import format_rfc3339
from tasklease.core.config import Config
from tasklease.core.delegation import principal_ref
from tasklease.core.errors import Forbidden, InvalidRequest, Unauthorized
from tasklease.core.identity import decode_signature
from tasklease.core.kernel import Kernel, RequestContext, Service
from tasklease.core.lineage import ending_records
from tasklease.core.pending import Lost, Pending
from tasklease.core.records import AgentSession, RevocationRecord
from tasklease.core.store import WriteTx
from tasklease.core.tokens import Claims
from tasklease.rules import jws
from tasklease.rules.messages import HEARTBEAT_CONTEXT, heartbeat_signing_input

__all__ = [
    "HEARTBEAT_CONTEXT",
    "SWEEPER_LEASE",
    "Liveness",
    "heartbeat_signing_input",
    "new_session",
]

SWEEPER_LEASE = "liveness-sweeper"
SWEEP_BATCH = 100
_PROOF_JTI = re.compile(r"[A-Za-z0-9_-]{16,64}")


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


class Liveness(Service):
    """Heartbeats and the sweeper. Thread-safe; one per broker."""

    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel)
        # Who took the sweeper lease at this broker's last sweep (None: not taken).
        self._sweeper_holder: str | None = None

    # --- heartbeat -----------------------------------------------------------------------------

    def prepare_heartbeat(
        self,
        claims: Claims,
        *,
        timestamp: object,
        proof_jti: object,
        signature: object,
        done: object,
        ctx: RequestContext,
    ) -> Pending[AgentSession]:
        """A heartbeat (or the agent's declaration that it is done) checked, not written
        (``core.pending``): whoever completes it records it and gets the session.

        Raises:
            InvalidRequest: a field is missing or malformed.
            Unauthorized: the proof does not verify with the registered key, is stale or
                replayed (audited as ``heartbeat_denied``).
            Forbidden: the token is not an agent's, or the agent is revoked, released or
                swept (audited).
        """
        require_agent(self._kernel, claims, "heartbeat", ctx)
        cfg = self._config
        if type(timestamp) is not int:
            raise InvalidRequest("missing required field: timestamp (integer Unix seconds)")
        if not isinstance(proof_jti, str) or _PROOF_JTI.fullmatch(proof_jti) is None:
            raise InvalidRequest("jti must be 16 to 64 characters of [A-Za-z0-9_-]")
        if done is not None and not isinstance(done, bool):
            raise InvalidRequest("done must be a boolean")
        finished = done is True
        sig = decode_signature(signature)
        now = self._kernel.now()
        base = refused("heartbeat_denied", claims, ctx)
        agent, why = self._kernel.agent_standing(claims.sub)
        if agent is None or why:
            raise self._kernel.deny(
                Forbidden("agent is not active"),
                replace(base, detail=f"heartbeat refused: {reason_text(why)}"),
            )
        # Compared, never subtracted: an integer no float holds is out of the skew too.
        if not now - cfg.clock_skew <= timestamp <= now + cfg.clock_skew:
            raise self._kernel.deny(
                Unauthorized("heartbeat proof verification failed"),
                replace(base, detail=f"heartbeat timestamp {timestamp} outside the clock skew"),
            )
        # The presented token as its holder names it (rules.messages.heartbeat_token_id):
        # a by-reference token by the hash it was looked up by, a JWS by its jti.
        token_id = claims.reference or claims.jti
        message = heartbeat_signing_input(claims.sub, token_id, timestamp, proof_jti, finished)
        if not jws.verify_detached(message, sig, VerifyKey(agent.public_key)):
            raise self._kernel.deny(
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

        def lost(exc: Lost) -> AuditEntry:
            return replace(base, detail=f"heartbeat refused: {reason_text(exc.reason)}")

        def answer() -> AgentSession:
            if finished:
                self._kernel.apply_revocations(ending)
            return result[0]

        return Pending(unit, answer, lost)

    # --- the sweeper ---------------------------------------------------------------------------

    def sweep_silent_agents(self, holder: str) -> list[str]:
        """Revoke (level ``agent``) every supervised agent silent for interval x misses.

        Every agent due is revoked by one call (read :data:`SWEEP_BATCH` at a time) unless
        that outlasts half the lease, and the next call goes on. Returns the agents revoked
        by this call. Does nothing (returns ``[]``) unless this process holds the sweeper
        lease, so replicas sharing a store never sweep at once; and each revocation re-reads
        the session inside its transaction, so an agent that heartbeated meanwhile, or was
        swept already, is left alone.
        """
        cfg = self._config
        # The wall clock, never ahead of elapsed time (Kernel.lease_now): a forward jump
        # neither makes live agents look silent nor writes a lease others cannot take.
        now = self._kernel.lease_now()
        granted: list[bool] = []

        def lease(tx: WriteTx) -> list[AuditEntry]:
            granted.append(
                tx.acquire_lease(SWEEPER_LEASE, holder, now, now + 2 * cfg.heartbeat_interval)
            )
            return []

        self._kernel.commit(lease)
        self._sweeper_holder = holder if granted[0] else None
        if not granted[0]:
            return []
        allowed = cfg.heartbeat_interval * cfg.heartbeat_misses
        bound = now - allowed
        revoked: list[str] = []
        # Batch after batch, oldest silence first, until none is due: agents that stopped
        # without ``done`` must not hold back one that went silent after them. For as long
        # as the lease taken above is surely this process's (half its term).
        while True:
            batch = self._store.silent_agents(bound, SWEEP_BATCH)
            swept = [c.agent_id for c in batch if self._sweep_one(c.agent_id, now, bound)]
            revoked.extend(swept)
            if (
                len(batch) < SWEEP_BATCH
                or not swept
                or self._kernel.lease_now() >= now + cfg.heartbeat_interval
            ):
                return revoked

    def release_sweeper_lease(self) -> bool:
        """Give the sweeper lease up if this broker's last sweep took it, so that another
        process sweeps from its next round, not once the lease expires (a broker that
        stops, after its last sweep). True iff it was given up; False when this broker
        did not hold it, or it expired and another holder took it.

        Raises:
            Unavailable: the store could not be written (the lease expires as before).
        """
        holder = self._sweeper_holder
        if holder is None:
            return False
        released = self._kernel.release_lease(SWEEPER_LEASE, holder)
        self._sweeper_holder = None
        return released

    def _sweep_one(self, agent_id: str, now: float, bound: float) -> bool:
        """Revoke one silent agent unless it heartbeated or was swept meanwhile.

        The revocation is dated inside its transaction, not when the sweep began: a token
        renewed or delegated meanwhile (before the session is marked swept) is issued no
        later than that, and is ended too; one asked for after it is refused for the swept
        session."""
        cfg = self._config
        swept: list[RevocationRecord] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            session = tx.get_agent_session(agent_id)
            if (
                session is None
                or session.state != "active"
                or not session.heartbeat_required
                or session.last_heartbeat >= bound
            ):
                return []  # it heartbeated, was released or was swept meanwhile
            record = self._kernel.revocation_entry("agent", agent_id)
            tx.insert_revocation(record)
            tx.set_agent_status(agent_id, "revoked")
            tx.put_agent_session(replace(session, state="silent_revoked"))
            swept.append(record)
            agent = self._store.get_agent(agent_id)
            allowed = cfg.heartbeat_interval * cfg.heartbeat_misses
            return [
                AuditEntry(
                    "agent_silent_revoked",
                    outcome="success",
                    agent_id=agent_id,
                    task_id=agent.task_id if agent else "",
                    orch_id=agent.orch_id if agent else "",
                    app_id=agent.app_id if agent else "",
                    principal_ref=principal_ref(session.principal) if session.principal else "",
                    detail=f"no heartbeat since {format_rfc3339(session.last_heartbeat)} "
                    f"({now - session.last_heartbeat:.0f}s silent; allowed "
                    f"{cfg.heartbeat_misses} misses x {cfg.heartbeat_interval:g}s = "
                    f"{allowed:g}s): revoked at level agent, with every token delegated "
                    "from it | by=liveness-sweeper",
                )
            ]

        self._kernel.commit(unit)
        if not swept:
            return False
        self._kernel.apply_revocations(swept[-1:])
        self._metrics.tokens_revoked.labels("agent").inc()
        return True
