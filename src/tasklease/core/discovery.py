"""Secure discovery binding: an agent's endpoint, signed by the agent's registered key.

An agent publishes where it can be reached (``POST /v1/discovery/bind``) by signing
:func:`statement` - ``"tasklease-discovery-v1\\n" || JSON [agent_id, endpoint, issued_at]``
- with the Ed25519 key it registered. The broker checks the signature against the
registration and stores the statement; ``GET /v1/discovery/{agent_id}`` answers the
endpoint *with* the signature and the public key, so a peer verifies
(:func:`verify_binding`) that the holder of the ID's registered key chose this endpoint.
A man in the middle who substitutes the endpoint (in storage, in transit, or a rogue
replica) cannot produce the signature. Peers should take the public key from the agent's
verified access token (its ``agent_jwk`` claim) or a completed handshake rather than
from the discovery answer itself, so that the check needs no trust in the channel.

``issued_at`` must be within the clock skew when binding and later than the stored
binding's, so an old signed statement cannot be replayed to roll an endpoint back. An
endpoint holds no user name or password (``user:pass@host``): any agent of the tenant may
resolve it.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from urllib.parse import urlsplit

from nacl.signing import VerifyKey

from tasklease.core.auditformat import AuditEntry, clipped, quoted
from tasklease.core.callers import refused, require_agent
from tasklease.core.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from tasklease.core.identity import decode_signature
from tasklease.core.kernel import RequestContext, Service
from tasklease.core.lineage import registration_ceiling
from tasklease.core.records import AgentRecord, DiscoveryBinding
from tasklease.core.store import WriteTx
from tasklease.core.tokens import Claims
from tasklease.rules import jws

__all__ = ["DISCOVERY_CONTEXT", "Discovery", "statement", "verify_binding"]

DISCOVERY_CONTEXT = b"tasklease-discovery-v1\n"
MAX_ENDPOINT_CHARS = 2048
_RECORDED_ENDPOINT = 512  # characters of an endpoint an audit event keeps
_SCHEMES = frozenset({"https", "http", "wss", "ws", "grpcs", "grpc"})
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


def statement(agent_id: str, endpoint: str, issued_at: int) -> bytes:
    """The exact bytes an agent signs to bind ``endpoint`` to its ID (known-answer tested)."""
    body = json.dumps([agent_id, endpoint, issued_at], separators=(",", ":"), ensure_ascii=False)
    return DISCOVERY_CONTEXT + body.encode("utf-8")


def verify_binding(
    agent_id: str, endpoint: str, issued_at: int, signature: bytes, public_key: bytes
) -> bool:
    """True iff ``signature`` is the key holder's signature binding ``endpoint`` to the ID.

    Pure: peers run it offline on a discovery answer.
    """
    if len(public_key) != 32 or len(signature) != 64:
        return False
    message = statement(agent_id, endpoint, issued_at)
    return jws.verify_detached(message, signature, VerifyKey(public_key))


def _endpoint(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("missing required field: endpoint")
    if len(value) > MAX_ENDPOINT_CHARS or _PRINTABLE.fullmatch(value) is None:
        raise InvalidRequest("endpoint must be a URL of at most 2048 printable characters")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise InvalidRequest("endpoint is not a URL") from None
    if parts.scheme not in _SCHEMES or not parts.hostname or parts.fragment:
        raise InvalidRequest(
            "endpoint must be an absolute https, http, wss, ws, grpcs or grpc URL "
            "without a fragment"
        )
    if "@" in parts.netloc:
        # Every agent of the tenant may resolve it and its event records it: a user name
        # or password in it would be handed to all of them (the message never echoes it).
        raise InvalidRequest("endpoint must not hold a user name or password")
    return value


class Discovery(Service):
    """Binding and resolving agents' endpoints. Thread-safe; one per broker."""

    def bind(
        self,
        claims: Claims,
        *,
        endpoint: object,
        issued_at: object,
        signature: object,
        ctx: RequestContext,
    ) -> DiscoveryBinding:
        """Publish the caller's endpoint under its SPIFFE ID.

        Raises:
            InvalidRequest: a field is missing or malformed.
            Unauthorized: the signature does not verify with the caller's registered key, or
                ``issued_at`` is stale or not newer than the stored binding (audited).
            Forbidden: the caller is not an active registered agent, or its token is not
                an agent's (audited).
        """
        require_agent(self._kernel, claims, "bind", ctx)
        url = _endpoint(endpoint)
        if type(issued_at) is not int:
            raise InvalidRequest("missing required field: issued_at (integer Unix seconds)")
        sig = decode_signature(signature)
        cfg = self._config
        now = self._kernel.now()
        base = refused("discovery_bind_denied", claims, ctx)
        agent, why = self._kernel.agent_standing(claims.sub)
        if agent is None or why:
            raise self._kernel.deny(Forbidden("agent is not active"), replace(base, detail=why))
        # Compared, never subtracted: an integer no float holds is out of the skew too.
        if not now - cfg.clock_skew <= issued_at <= now + cfg.clock_skew:
            raise self._kernel.deny(
                Unauthorized("discovery binding verification failed"),
                replace(base, detail=f"issued_at {issued_at} outside the clock skew"),
            )
        if not verify_binding(claims.sub, url, issued_at, sig, agent.public_key):
            raise self._kernel.deny(
                Unauthorized("discovery binding verification failed"),
                replace(base, detail="signature does not verify with the registered key"),
            )
        binding = DiscoveryBinding(
            agent_id=claims.sub,
            endpoint=url,
            issued_at=issued_at,
            signature=sig,
            expires_at=registration_ceiling(agent, cfg) + cfg.clock_skew,
        )

        def unit(tx: WriteTx) -> list[AuditEntry]:
            # The store decides, in the one statement that writes: a read before it would
            # let two binds racing on two replicas both replace the same binding.
            if not tx.put_discovery_binding(binding):
                current = self._store.get_discovery_binding(claims.sub)
                held = current.issued_at if current is not None else "?"
                raise Unauthorized(
                    "discovery binding verification failed",
                    reason=f"issued_at not newer than the bound statement ({held})",
                )
            return [
                replace(
                    base,
                    event_type="discovery_bound",
                    outcome="success",
                    # The endpoint may be 2048 characters: the event keeps the
                    # head of a long one, and issued_at after it.
                    detail="endpoint bound: "
                    f"{quoted(clipped(url, _RECORDED_ENDPOINT, breaks='/'))} "
                    f"issued_at={issued_at}",
                )
            ]

        try:
            self._kernel.commit(unit)
        except Unauthorized as exc:
            raise self._kernel.deny(exc, replace(base, detail=exc.reason)) from None
        return binding

    def resolve(self, agent_id: str) -> tuple[DiscoveryBinding, AgentRecord]:
        """The binding of an active agent and its registration (for the public key).

        Raises:
            NotFound: no agent, not active, or no unexpired binding.
        """
        agent, why = self._kernel.agent_standing(agent_id)
        binding = self._store.get_discovery_binding(agent_id) if agent is not None else None
        if agent is None or why or binding is None or binding.expires_at <= self._kernel.now():
            raise NotFound("no endpoint bound for this agent")
        return binding, agent
