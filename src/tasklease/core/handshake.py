"""The broker-mediated handshake: two registered agents prove their keys to each other.

Three steps; each side proves possession of the Ed25519 key it registered by signing
:func:`~tasklease.core.mutual.transcript`::

    A -> broker  initiate(responder=B, initiator_nonce=na)   bearer A
                 <- offer: broker-signed ticket {hid, A, B, na, A's scope, exp = now+30s}
    A -> B       the offer (over the agents' own channel)
    B -> broker  respond(offer, responder_nonce=nb, sig_B(transcript("responder", ...)))
                 <- answer: ticket {hid, A, B, na, nb, both scopes}, and A's identity+scope
    B -> A       the answer
    A -> broker  complete(answer, sig_A(transcript("initiator", ...)))   bearer A
                 <- B's identity+scope, and a receipt {hid, A, B, na, nb, scopes, aud=B}
    A -> B       the receipt; B verifies it offline with the JWKS
                 (:func:`~tasklease.core.mutual.verify_receipt`)

The handshake is *stateless*: its state travels in tickets the broker signs with its
token key under their own ``typ`` (so no ticket is ever accepted as another kind of
token), live for 30 s. Single use is enforced by spending ``respond:<hid>`` and
``complete:<hid>`` in the used-nonce table inside each step's transaction, which works
across replicas like registration nonces do; nothing is allocated until a party has
authenticated. Each step re-checks both parties' standing (registered, active, not
revoked, not swept) and the token each presented at its own step (unexpired, not revoked
at any level: the offer and the answer carry what the revocation index matches it by), so
a party revoked mid-handshake stops it, and so does a token released, renewed, revoked or
expired after the step that read its scope: the broker never vouches for a scope no live
token carries.

What fails, and why: a replayed respond/complete (the hid is spent); reflection (the
initiator cannot name itself, cannot respond to its own offer - the bearer must be the
offer's responder - and a signature made in one role never verifies in the other, the
role is in the transcript); a responder that is not the registered holder of the target
ID (wrong bearer, or a signature that does not verify with the target's registered key);
a revoked or expired party (its bearer fails, or its standing does); a transcript from
another handshake (the hid and both nonces are signed). Every failure is audited.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.signing import VerifyKey

from tasklease.core.auditformat import AuditEntry, reason_text
from tasklease.core.callers import about, refused, require_agent
from tasklease.core.errors import InvalidRequest, TaskleaseError, Unauthorized
from tasklease.core.identity import decode_signature
from tasklease.core.kernel import Kernel, RequestContext, Service
from tasklease.core.mutual import (
    HANDSHAKE_TTL,
    KIND_ANSWER,
    KIND_OFFER,
    KIND_RECEIPT,
    HandshakeResult,
    ProofRejected,
    decode_signed,
    string_list,
    transcript,
)
from tasklease.core.pending import Lost, Pending, complete
from tasklease.core.records import AgentRecord
from tasklease.core.signing import SigningKeys
from tasklease.core.store import WriteTx
from tasklease.core.tokens import Claims
from tasklease.rules import jws
from tasklease.rules.chainverify import Hop
from tasklease.rules.claims import is_expired

__all__ = ["Handshakes"]

_NONCE = re.compile(r"[0-9a-f]{32,128}")
_FAILED = "mutual authentication failed"
_INITIATOR_HELD = "ini_held"  # the ticket claims naming what _Presented reads
_RESPONDER_HELD = "rsp_held"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Presented:
    """The token a party presented at its step, as a later step checks that it still
    stands: its ``exp`` and what the revocation index matches it by
    (``core.revocation.RevocableToken``)."""

    jti: str
    sub: str
    iat: int
    oiat: int
    exp: int
    task_id: str
    lineage: tuple[str, ...]
    delegation_chain: tuple[Hop, ...]


def _presented(claims: Claims) -> dict[str, Any]:
    """What a ticket carries of the token ``claims`` were read from (:class:`_Presented`)."""
    return {
        "jti": claims.jti,
        "iat": claims.iat,
        "oiat": claims.oiat,
        "exp": claims.exp,
        "task": claims.task_id,
        "lineage": list(claims.lineage),
        "chain": [[hop.agent, hop.delegated_at] for hop in claims.delegation_chain],
    }


class _Seal:
    """What a ticket carries of a presented token (:func:`_presented`), sealed
    (XSalsa20-Poly1305) under a key of the broker's: the peer the offer or the answer
    passes through learns nothing of a token it was never shown (its ``jti``, lineage,
    delegators). The key is derived from the nonce secret, which the replicas share."""

    def __init__(self, key: bytes) -> None:
        self._box = SecretBox(key)

    def seal(self, claims: Claims) -> str:
        text = json.dumps(_presented(claims), separators=(",", ":"))
        return jws.b64url_encode(self._box.encrypt(text.encode("utf-8")))

    def open(self, ticket: dict[str, Any], name: str, sub: str) -> _Presented:
        """The token a ticket says party ``sub`` presented; raises ProofRejected if it
        names none (a ticket of an older broker: fail closed) or one not sealed here."""
        sealed = ticket.get(name)
        if type(sealed) is not str:
            raise ProofRejected(f"ticket without {name}")
        try:
            held = json.loads(self._box.decrypt(jws.b64url_decode(sealed)))
        except (jws.JWSError, CryptoError, ValueError):
            raise ProofRejected(f"ticket with a {name} not sealed here") from None
        return _read_presented(held, name, sub)


def _read_presented(held: object, name: str, sub: str) -> _Presented:
    """The token ``held`` (a ticket's record, opened) says party ``sub`` presented."""
    if type(held) is not dict:
        raise ProofRejected(f"ticket with a malformed {name}")
    jti, task, lineage, chain = (
        held.get("jti"),
        held.get("task"),
        held.get("lineage"),
        held.get("chain"),
    )
    iat, oiat, exp = held.get("iat"), held.get("oiat"), held.get("exp")
    if (
        type(jti) is not str
        or not isinstance(iat, int)
        or not isinstance(oiat, int)
        or not isinstance(exp, int)
        or any(type(v) is not int for v in (iat, oiat, exp))
        or type(task) is not str
        or type(lineage) is not list
        or not all(type(v) is str for v in lineage)
        or type(chain) is not list
        or not all(
            type(h) is list and len(h) == 2 and all(type(v) is str for v in h) for h in chain
        )
    ):
        raise ProofRejected(f"ticket with a malformed {name}")
    hops = tuple(Hop(agent, at) for agent, at in chain)
    return _Presented(jti, sub, iat, oiat, exp, task, tuple(lineage), hops)


def _nonce(value: object, field: str) -> str:
    if not isinstance(value, str) or _NONCE.fullmatch(value) is None:
        raise InvalidRequest(f"{field} must be 32 to 128 lowercase hex characters")
    return value


class Handshakes(Service):
    """The three handshake steps. Thread-safe (stateless); one per broker."""

    def __init__(self, kernel: Kernel, keys: SigningKeys, seal_key: bytes) -> None:
        super().__init__(kernel)
        self._keys = keys
        self._seal = _Seal(seal_key)

    def initiate(
        self,
        claims: Claims,
        *,
        responder: object,
        initiator_nonce: object,
        ctx: RequestContext,
    ) -> tuple[str, str, int]:
        """Step 1: ``(handshake_id, offer, expires_in)`` for a handshake with ``responder``.

        Raises:
            Forbidden: the caller's token is not an agent's (audited).
            InvalidRequest: a field is missing or malformed.
            Unauthorized: the responder is unknown, revoked or the caller itself; the
                caller is not in good standing (audited as ``mutual_auth_failed``).
        """
        require_agent(self._kernel, claims, "handshake", ctx)
        if not isinstance(responder, str) or not responder or len(responder) > 2048:
            raise InvalidRequest("missing required field: responder_id")
        na = _nonce(initiator_nonce, "initiator_nonce")
        step = _Step(self._kernel, claims, "initiate", ctx)
        if responder == claims.sub:
            raise step.fail("reflection: the initiator named itself as responder")
        step.standing(claims.sub, "initiator")
        step.standing(responder, "responder")
        now = int(self._kernel.now())
        hid = secrets.token_hex(16)
        offer = self._ticket(
            KIND_OFFER,
            {
                "iss": self._config.issuer,
                "hid": hid,
                "ini": claims.sub,
                "rsp": responder,
                "na": na,
                "ini_scope": list(claims.scope),
                _INITIATOR_HELD: self._seal.seal(claims),
                "iat": now,
                "exp": now + HANDSHAKE_TTL,
            },
        )
        self._kernel.record(
            replace(
                about(claims),
                event_type="mutual_auth_initiated",
                request_id=ctx.request_id,
                detail=f"handshake {hid} initiated by {claims.sub} with {responder}",
            )
        )
        return hid, offer, HANDSHAKE_TTL

    def respond(self, claims: Claims, **request: Any) -> tuple[str, HandshakeResult]:
        """:meth:`prepare_respond`, committed in this thread."""
        return complete(self._kernel, self.prepare_respond(claims, **request))

    def prepare_respond(
        self,
        claims: Claims,
        *,
        offer: object,
        responder_nonce: object,
        signature: object,
        ctx: RequestContext,
    ) -> Pending[tuple[str, HandshakeResult]]:
        """Step 2, checked and not written (``core.pending``): the responder proves its
        key; once its single-use marker is committed, ``(answer, initiator's identity)``.

        Raises:
            Forbidden: the caller's token is not an agent's (audited).
            InvalidRequest: a field is missing or malformed.
            Unauthorized: the offer is not ours, expired or replayed; the caller is not
                the offer's responder or not the holder of its registered key; either
                party is no longer in good standing (audited as ``mutual_auth_failed``).
        """
        require_agent(self._kernel, claims, "handshake", ctx)
        nb = _nonce(responder_nonce, "responder_nonce")
        sig = decode_signature(signature)
        step = _Step(self._kernel, claims, "respond", ctx)
        try:
            ticket = self._open_ticket(offer, KIND_OFFER)
            initiator_token = self._seal.open(ticket, _INITIATOR_HELD, ticket["ini"])
        except ProofRejected as exc:
            raise step.fail(f"offer: {exc.reason}") from None
        hid, ini, rsp, na = ticket["hid"], ticket["ini"], ticket["rsp"], ticket["na"]
        if claims.sub != rsp:
            why = "reflection: the initiator answered its own offer" if claims.sub == ini else ""
            raise step.fail(why or f"{claims.sub} is not the responder {rsp} of handshake {hid}")
        responder_agent = step.standing(rsp, "responder")
        message = transcript("responder", hid, ini, rsp, na, nb)
        step.verify(responder_agent, message, sig, "responder")
        step.standing(ini, "initiator")
        step.token(initiator_token, "initiator")
        answer = self._ticket(
            KIND_ANSWER,
            {
                **ticket,
                "nb": nb,
                "rsp_scope": list(claims.scope),
                _RESPONDER_HELD: self._seal.seal(claims),
            },
        )
        result = HandshakeResult(hid, ini, string_list(ticket.get("ini_scope")))
        return step.spend(
            (answer, result),
            f"mutual-respond\n{hid}",
            ticket["exp"] + self._config.clock_skew + 1,
            replace(
                about(claims),
                event_type="mutual_auth_responded",
                request_id=ctx.request_id,
                detail=f"handshake {hid}: responder {rsp} proved its registered key to {ini}",
            ),
        )

    def complete(self, claims: Claims, **request: Any) -> tuple[str, HandshakeResult]:
        """:meth:`prepare_complete`, committed in this thread."""
        return complete(self._kernel, self.prepare_complete(claims, **request))

    def prepare_complete(
        self,
        claims: Claims,
        *,
        answer: object,
        signature: object,
        ctx: RequestContext,
    ) -> Pending[tuple[str, HandshakeResult]]:
        """Step 3, checked and not written: the initiator proves its key; once its
        single-use marker is committed, ``(receipt, responder's identity)``.

        Raises:
            Forbidden: the caller's token is not an agent's (audited).
            InvalidRequest: a field is missing or malformed.
            Unauthorized: as :meth:`respond`, for the initiator (audited).
        """
        require_agent(self._kernel, claims, "handshake", ctx)
        sig = decode_signature(signature)
        step = _Step(self._kernel, claims, "complete", ctx)
        try:
            ticket = self._open_ticket(answer, KIND_ANSWER)
            nb = ticket.get("nb")
            if not isinstance(nb, str):
                raise ProofRejected("answer without responder nonce")
            initiator_token = self._seal.open(ticket, _INITIATOR_HELD, ticket["ini"])
            responder_token = self._seal.open(ticket, _RESPONDER_HELD, ticket["rsp"])
        except ProofRejected as exc:
            raise step.fail(f"answer: {exc.reason}") from None
        hid, ini, rsp, na = ticket["hid"], ticket["ini"], ticket["rsp"], ticket["na"]
        if claims.sub != ini:
            raise step.fail(f"{claims.sub} is not the initiator {ini} of handshake {hid}")
        initiator_agent = step.standing(ini, "initiator")
        message = transcript("initiator", hid, ini, rsp, na, nb)
        step.verify(initiator_agent, message, sig, "initiator")
        step.standing(rsp, "responder")
        # The scopes the receipt and the answer vouch for are these tokens': both must
        # still stand (the bearer here may be another token of the initiator's).
        step.token(initiator_token, "initiator")
        step.token(responder_token, "responder")
        now = int(self._kernel.now())
        vouched = {k: v for k, v in ticket.items() if k not in (_INITIATOR_HELD, _RESPONDER_HELD)}
        # The receipt vouches for both tokens' scopes: it lives no longer than either
        # (both are past now: step.token refused them otherwise).
        exp = min(now + HANDSHAKE_TTL, initiator_token.exp, responder_token.exp)
        receipt = self._ticket(KIND_RECEIPT, {**vouched, "aud": rsp, "iat": now, "exp": exp})
        result = HandshakeResult(hid, rsp, string_list(ticket.get("rsp_scope")))
        return step.spend(
            (receipt, result),
            f"mutual-complete\n{hid}",
            ticket["exp"] + self._config.clock_skew + 1,
            replace(
                about(claims),
                event_type="mutual_auth_completed",
                request_id=ctx.request_id,
                detail=f"handshake {hid} completed: {ini} and {rsp} each proved their "
                "registered key",
            ),
        )

    def _ticket(self, kind: str, claims: dict[str, Any]) -> str:
        body = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return self._keys.ring.sign(body, kind)

    def _open_ticket(self, token: object, kind: str) -> dict[str, Any]:
        """The claims of one of our tickets of ``kind``; raises ProofRejected otherwise."""
        if not isinstance(token, str) or not token:
            raise ProofRejected("no ticket")
        claims = decode_signed(token, kind, self._keys.ring.verify_key)
        if claims.get("iss") != self._config.issuer:
            raise ProofRejected("ticket issuer mismatch")
        exp = claims.get("exp")
        if type(exp) is not int or is_expired(exp, self._kernel.now()):
            raise ProofRejected("handshake expired")
        for name in ("hid", "ini", "rsp", "na"):
            if not isinstance(claims.get(name), str):
                raise ProofRejected(f"ticket without {name}")
        return claims


class _Step:
    """One handshake step's refusals and its single-use marker, each audited once."""

    def __init__(self, kernel: Kernel, claims: Claims, step: str, ctx: RequestContext) -> None:
        self._kernel = kernel
        self._base = refused("mutual_auth_failed", claims, ctx)
        self._step = step

    def fail(self, why: str) -> TaskleaseError:
        return self._kernel.deny(
            Unauthorized(_FAILED),
            replace(self._base, detail=f"mutual auth {self._step} refused: {reason_text(why)}"),
        )

    def standing(self, agent_id: str, who: str) -> AgentRecord:
        agent, why = self._kernel.agent_standing(agent_id)
        if agent is None or why:
            raise self.fail(f"{who} {agent_id}: {why or 'agent not registered'}")
        return agent

    def token(self, presented: _Presented, who: str) -> None:
        """Refuse unless the token ``who`` presented at its step still stands: unexpired
        (dead at its ``exp``) and matched by no revocation (itself, its agent, task,
        lineage or delegators), so no scope it carried is vouched for once it is gone."""
        if is_expired(presented.exp, self._kernel.now()):
            raise self.fail(f"{who}'s token jti={presented.jti} expired")
        level = self._kernel.revocations.match(presented)
        if level is not None:
            raise self.fail(f"{who}'s token jti={presented.jti} revoked at level {level}")

    def verify(self, agent: AgentRecord, message: bytes, signature: bytes, who: str) -> None:
        if not jws.verify_detached(message, signature, VerifyKey(agent.public_key)):
            raise self.fail(
                f"{who} signature does not verify with the registered key of "
                f"{agent.agent_id} (not its holder, or a transcript of another handshake)"
            )

    def spend(self, value: T, marker: str, expires_at: float, event: AuditEntry) -> Pending[T]:
        """``value`` once the step's single-use ``marker`` and its ``event`` are written;
        a marker spent already (the step replayed) is a refusal, audited once."""
        marker_hash = hashlib.sha256(marker.encode("utf-8")).hexdigest()

        def unit(tx: WriteTx) -> list[AuditEntry]:
            if not tx.consume_nonce(marker_hash, expires_at):
                raise Unauthorized(_FAILED, reason="handshake step replayed")
            return [event]

        def lost(exc: Lost) -> AuditEntry:
            return replace(
                self._base, detail=f"mutual auth {self._step} refused: {reason_text(exc.reason)}"
            )

        return Pending(unit, lambda: value, lost)
