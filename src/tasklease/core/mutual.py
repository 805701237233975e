"""Agent-to-agent mutual authentication: a broker-mediated handshake and offline proofs.

**Broker-mediated handshake** (three steps; each side proves possession of the Ed25519
key it registered, by signing :func:`transcript`)::

    A -> broker  initiate(responder=B, initiator_nonce=na)   bearer A
                 <- offer: broker-signed ticket {hid, A, B, na, A's scope, exp = now+30s}
    A -> B       the offer (over the agents' own channel)
    B -> broker  respond(offer, responder_nonce=nb, sig_B(transcript("responder", ...)))
                 <- answer: ticket {hid, A, B, na, nb, both scopes}, and A's identity+scope
    B -> A       the answer
    A -> broker  complete(answer, sig_A(transcript("initiator", ...)))   bearer A
                 <- B's identity+scope, and a receipt {hid, A, B, na, nb, scopes, aud=B}
    A -> B       the receipt; B verifies it offline with the JWKS (:func:`verify_receipt`)

The handshake is *stateless*: its state travels in tickets the broker signs with its
token key under their own ``typ`` (so no ticket is ever accepted as another kind of
token), live for 30 s. Single use is enforced by spending ``respond:<hid>`` and
``complete:<hid>`` in the used-nonce table inside each step's transaction, which works
across replicas like registration nonces do; nothing is allocated until a party has
authenticated. Each step re-checks both parties' standing (registered, active, not
revoked, not swept), so a party revoked mid-handshake stops it.

What fails, and why: a replayed respond/complete (the hid is spent); reflection (the
initiator cannot name itself, cannot respond to its own offer - the bearer must be the
offer's responder - and a signature made in one role never verifies in the other, the
role is in the transcript); a responder that is not the registered holder of the target
ID (wrong bearer, or a signature that does not verify with the target's registered key);
a revoked or expired party (its bearer fails, or its standing does); a transcript from
another handshake (the hid and both nonces are signed). Every failure is audited.

**Offline flow** (WIMSE workload proof tokens, draft-ietf-wimse-wpt): an agent signs a
short JWT with its own registered key (``typ: wpt+jwt``, ``aud`` = the peer's SPIFFE ID,
``exp`` at most 60 s away, ``jti``, ``wth`` = SHA-256 of its access token) and sends it
with the access token. The peer verifies the access token with the broker's JWKS and the
proof with the key the access token carries in ``agent_jwk``, and remembers the ``jti``
(:class:`ReplayCache`). These functions are pure (time is passed in) and need only
PyNaCl: the SDK and resource servers use them without a broker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from nacl.signing import SigningKey, VerifyKey

from tasklease.core import _jws

if TYPE_CHECKING:
    from tasklease.core.broker import Broker, RequestContext
    from tasklease.core.tokens import Claims

__all__ = [
    "HANDSHAKE_TTL",
    "KIND_ANSWER",
    "KIND_OFFER",
    "KIND_RECEIPT",
    "KIND_WPT",
    "MUTUAL_CONTEXT",
    "WPT_MAX_TTL",
    "HandshakeResult",
    "ProofRejected",
    "ReplayCache",
    "complete",
    "initiate",
    "make_workload_proof",
    "respond",
    "token_hash",
    "transcript",
    "verify_peer",
    "verify_receipt",
    "verify_workload_proof",
]

MUTUAL_CONTEXT = b"tasklease-mutual-v1\n"
HANDSHAKE_TTL = 30
KIND_OFFER = "tasklease-mutual-offer+jwt"
KIND_ANSWER = "tasklease-mutual-answer+jwt"
KIND_RECEIPT = "tasklease-mutual-receipt+jwt"
KIND_WPT = "wpt+jwt"
WPT_MAX_TTL = 60
_ROLES = ("initiator", "responder")
_NONCE = re.compile(r"[0-9a-f]{32,128}")
_FAILED = "mutual authentication failed"


def transcript(
    role: str,
    handshake_id: str,
    initiator: str,
    responder: str,
    initiator_nonce: str,
    responder_nonce: str,
) -> bytes:
    """The exact bytes a party signs in the handshake (known-answer tested).

    ``"tasklease-mutual-v1\\n" || JSON [role, handshake_id, initiator, responder,
    initiator_nonce, responder_nonce]`` (compact, UTF-8). The prefix separates it from
    every other signature an agent makes; ``role`` (``initiator`` or ``responder``) makes
    a signature useless in the other role; the rest binds both identities, both nonces
    and this handshake.

    Raises:
        ValueError: ``role`` is neither role.
    """
    if role not in _ROLES:
        raise ValueError("role must be 'initiator' or 'responder'")
    body = json.dumps(
        [role, handshake_id, initiator, responder, initiator_nonce, responder_nonce],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return MUTUAL_CONTEXT + body.encode("utf-8")


def token_hash(token: str) -> str:
    """base64url(SHA-256(ASCII token)), the ``wth``/``ath`` form (RFC 9449 section 4.2)."""
    return _jws.b64url_encode(hashlib.sha256(token.encode("ascii")).digest())


# --- offline: receipts and workload proof tokens (pure) ------------------------------------


class ProofRejected(Exception):
    """A receipt or workload proof failed verification; ``reason`` is for logs only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What one party learned about the other, verified by the broker."""

    handshake_id: str
    peer_id: str
    peer_scope: tuple[str, ...]


def _decode(token: str, typ: str, resolve_key: Callable[[str], VerifyKey | None]) -> dict[str, Any]:
    try:
        return _jws.decode(token, resolve_key=resolve_key, allowed_typs=(typ,)).claims
    except _jws.JWSError as exc:
        raise ProofRejected(exc.reason) from None


def _strs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProofRejected("scope is not a list of strings")
    return tuple(value)


def verify_receipt(
    receipt: str,
    *,
    resolve_key: Callable[[str], VerifyKey | None],
    issuer: str,
    me: str,
    handshake_id: str,
    responder_nonce: str,
    now: float,
    skew: int = 30,
) -> HandshakeResult:
    """The responder's check of a handshake receipt the initiator forwarded.

    ``resolve_key`` finds the broker's key by ``kid`` (from its JWKS). The receipt must be
    the broker's, for this responder, this handshake and the nonce this responder chose,
    and unexpired. Returns the initiator's verified identity and scope.

    Raises:
        ProofRejected: any check failed.
    """
    claims = _decode(receipt, KIND_RECEIPT, resolve_key)
    if claims.get("iss") != issuer:
        raise ProofRejected("issuer mismatch")
    if claims.get("aud") != me or claims.get("rsp") != me:
        raise ProofRejected("receipt is for another responder")
    if not hmac.compare_digest(str(claims.get("hid", "")), handshake_id):
        raise ProofRejected("receipt is for another handshake")
    if not hmac.compare_digest(str(claims.get("nb", "")), responder_nonce):
        raise ProofRejected("receipt does not carry our nonce")
    exp = claims.get("exp")
    if type(exp) is not int or now > exp + skew:
        raise ProofRejected("receipt expired")
    initiator = claims.get("ini")
    if not isinstance(initiator, str):
        raise ProofRejected("receipt without initiator")
    return HandshakeResult(handshake_id, initiator, _strs(claims.get("ini_scope")))


class ReplayCache:
    """Proof ``jti``s seen and still unexpired, bounded (oldest dropped first).

    A proof whose ``jti`` is here is a replay. Entries leave once their proof expired;
    when full, the oldest leave first - size it above the proofs one peer can accept per
    ``WPT_MAX_TTL`` seconds.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def check_and_add(self, jti: str, expires_at: float, now: float) -> bool:
        """True (and remembered) the first time ``jti`` is presented; False for a replay."""
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now:
                self._seen.popitem(last=False)
            if jti in self._seen:
                return False
            self._seen[jti] = expires_at
            self._seen.move_to_end(jti)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
            return True


def make_workload_proof(
    key: SigningKey,
    *,
    access_token: str,
    audience: str,
    now: float,
    ttl: int = 30,
    jti: str | None = None,
) -> str:
    """A WIMSE workload proof token signed with the agent's own registered key.

    Header ``{"alg": "EdDSA", "typ": "wpt+jwt", "kid": <RFC 7638 thumbprint>}``; claims
    ``aud`` (the peer's SPIFFE ID), ``iat``, ``exp`` (``ttl`` seconds, at most 60),
    ``jti`` and ``wth`` (base64url SHA-256 of ``access_token``).

    Raises:
        ValueError: ``ttl`` is not between 1 and 60 seconds.
    """
    from tasklease.core.keys import jwk_thumbprint

    if not 1 <= ttl <= WPT_MAX_TTL:
        raise ValueError("ttl must be between 1 and 60 seconds")
    iat = int(now)
    payload = {
        "aud": audience,
        "iat": iat,
        "exp": iat + ttl,
        "jti": jti or secrets.token_urlsafe(16),
        "wth": token_hash(access_token),
    }
    kid = jwk_thumbprint(bytes(key.verify_key))
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return _jws.encode(body, typ=KIND_WPT, kid=kid, key=key)


def verify_workload_proof(
    proof: str,
    *,
    access_token: str,
    access_claims: Mapping[str, Any],
    me: str,
    now: float,
    replay: ReplayCache,
    skew: int = 5,
) -> str:
    """Verify a peer's workload proof against its (already verified) access token.

    ``access_claims`` are the verified claims of ``access_token`` (see
    :func:`verify_peer`); the proof must verify with the key in their ``agent_jwk``, be
    addressed to ``me``, bind ``access_token`` (``wth``), live at most 60 s, be
    unexpired, and carry a ``jti`` not seen before. Returns the peer's SPIFFE ID.

    Raises:
        ProofRejected: any check failed.
    """
    from tasklease.core.keys import jwk_thumbprint

    jwk = access_claims.get("agent_jwk")
    x = jwk.get("x") if isinstance(jwk, dict) else None
    try:
        raw = _jws.b64url_decode(x) if isinstance(x, str) else b""
    except _jws.JWSError:
        raw = b""
    if len(raw) != 32:
        raise ProofRejected("access token carries no agent_jwk")
    kid = jwk_thumbprint(raw)
    peer_key = VerifyKey(raw)
    claims = _decode(proof, KIND_WPT, lambda k: peer_key if k == kid else None)
    if claims.get("aud") != me:
        raise ProofRejected("proof addressed to another audience")
    if not hmac.compare_digest(str(claims.get("wth", "")), token_hash(access_token)):
        raise ProofRejected("proof bound to another access token")
    iat, exp, jti = claims.get("iat"), claims.get("exp"), claims.get("jti")
    if type(iat) is not int or type(exp) is not int or not isinstance(jti, str) or not jti:
        raise ProofRejected("proof lacks iat, exp or jti")
    if exp <= iat or exp - iat > WPT_MAX_TTL:
        raise ProofRejected("proof lifetime outside 1..60 seconds")
    if now > exp + skew or now + skew < iat:
        raise ProofRejected("proof expired or not yet valid")
    if not replay.check_and_add(jti, exp + skew, now):
        raise ProofRejected("proof replayed")
    sub = access_claims.get("sub")
    if not isinstance(sub, str):
        raise ProofRejected("access token without subject")
    return sub


def verify_peer(
    access_token: str,
    proof: str,
    *,
    resolve_key: Callable[[str], VerifyKey | None],
    issuer: str,
    me: str,
    now: float,
    replay: ReplayCache,
    skew: int = 30,
) -> dict[str, Any]:
    """Offline mutual check of a peer: its access token (broker JWKS) and its proof.

    Verifies the access token's signature (``typ: at+jwt``, key by ``kid`` from the
    broker's JWKS), issuer and lifetime, then the workload proof. Revocation is *not*
    checked here: pair this with the revocation feed (``tasklease.verify``) where
    revocation must be seen within seconds. Returns the access token's claims.

    Raises:
        ProofRejected: any check failed.
    """
    claims = _decode(access_token, "at+jwt", resolve_key)
    if claims.get("iss") != issuer:
        raise ProofRejected("issuer mismatch")
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if type(exp) is not int or type(nbf) is not int or now > exp + skew or now + skew < nbf:
        raise ProofRejected("access token expired or not yet valid")
    verify_workload_proof(
        proof, access_token=access_token, access_claims=claims, me=me, now=now, replay=replay
    )
    return claims


# --- the broker-mediated handshake (run by the Broker facade) --------------------------


def _ticket(broker: Broker, kind: str, claims: dict[str, Any]) -> str:
    body = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return broker.keyring.sign(body, kind)


def _open_ticket(broker: Broker, token: object, kind: str) -> dict[str, Any]:
    """The claims of one of our tickets of ``kind``; raises ProofRejected otherwise."""
    if not isinstance(token, str) or not token:
        raise ProofRejected("no ticket")
    claims = _decode(token, kind, broker.keyring.verify_key)
    if claims.get("iss") != broker.config.issuer:
        raise ProofRejected("ticket issuer mismatch")
    exp = claims.get("exp")
    if type(exp) is not int or broker.kernel.now() > exp:
        raise ProofRejected("handshake expired")
    for name in ("hid", "ini", "rsp", "na"):
        if not isinstance(claims.get(name), str):
            raise ProofRejected(f"ticket without {name}")
    return claims


def _nonce(value: object, field: str) -> str:
    from tasklease.core.errors import InvalidRequest

    if not isinstance(value, str) or _NONCE.fullmatch(value) is None:
        raise InvalidRequest(f"{field} must be 32 to 128 lowercase hex characters")
    return value


def _signature(value: object) -> bytes:
    from tasklease.core.identity import decode_signature

    return decode_signature(value)


class _Step:
    """Auditing helpers of one handshake step (the Broker facade audits every outcome)."""

    def __init__(self, broker: Broker, claims: Claims, step: str, ctx: RequestContext) -> None:
        from tasklease.core.audit import AuditEntry

        self.broker = broker
        self.base = AuditEntry(
            "mutual_auth_failed",
            outcome="denied",
            agent_id=claims.sub,
            task_id=claims.task_id,
            orch_id=claims.orch_id,
            request_id=ctx.request_id,
        )
        self.step = step

    def fail(self, why: str, exc: Exception | None = None) -> Exception:
        from tasklease.core.errors import Unauthorized

        error = exc if exc is not None else Unauthorized(_FAILED)
        return self.broker.kernel.deny(
            error,  # type: ignore[arg-type]
            replace(self.base, detail=f"mutual auth {self.step} refused: {why}"),
        )

    def standing(self, agent_id: str, who: str) -> Any:

        agent, why = self.broker.kernel.agent_standing(agent_id)
        if agent is None or why:
            raise self.fail(f"{who} {agent_id}: {why or 'agent not registered'}")
        return agent

    def verify(self, agent: Any, message: bytes, signature: bytes, who: str) -> None:
        if not _jws.verify_detached(message, signature, VerifyKey(agent.public_key)):
            raise self.fail(
                f"{who} signature does not verify with the registered key of "
                f"{agent.agent_id} (not its holder, or a transcript of another handshake)"
            )

    def spend(self, marker: str, expires_at: float, event: Any) -> None:
        from tasklease.core.errors import Unauthorized

        marker_hash = hashlib.sha256(marker.encode("utf-8")).hexdigest()

        def unit(tx: Any) -> list[Any]:
            if not tx.consume_nonce(marker_hash, expires_at):
                raise Unauthorized(_FAILED, reason="handshake step replayed")
            return [event]

        try:
            self.broker.kernel.commit(unit)
        except Unauthorized as exc:
            raise self.fail(exc.reason) from None


def initiate(
    broker: Broker,
    claims: Claims,
    *,
    responder: object,
    initiator_nonce: object,
    ctx: RequestContext,
) -> tuple[str, str, int]:
    """Step 1: ``(handshake_id, offer, expires_in)`` for a handshake with ``responder``.

    Raises:
        InvalidRequest: a field is missing or malformed.
        Unauthorized: the responder is unknown, revoked or the caller itself; the caller
            is not in good standing (audited as ``mutual_auth_failed``).
    """
    from tasklease.core.audit import AuditEntry
    from tasklease.core.errors import InvalidRequest

    if not isinstance(responder, str) or not responder or len(responder) > 2048:
        raise InvalidRequest("missing required field: responder_id")
    na = _nonce(initiator_nonce, "initiator_nonce")
    step = _Step(broker, claims, "initiate", ctx)
    if responder == claims.sub:
        raise step.fail("reflection: the initiator named itself as responder")
    step.standing(claims.sub, "initiator")
    step.standing(responder, "responder")
    now = int(broker.kernel.now())
    hid = secrets.token_hex(16)
    offer = _ticket(
        broker,
        KIND_OFFER,
        {
            "iss": broker.config.issuer,
            "hid": hid,
            "ini": claims.sub,
            "rsp": responder,
            "na": na,
            "ini_scope": list(claims.scope),
            "iat": now,
            "exp": now + HANDSHAKE_TTL,
        },
    )
    broker.kernel.record(
        AuditEntry(
            "mutual_auth_initiated",
            agent_id=claims.sub,
            task_id=claims.task_id,
            orch_id=claims.orch_id,
            request_id=ctx.request_id,
            detail=f"handshake {hid} initiated by {claims.sub} with {responder}",
        )
    )
    return hid, offer, HANDSHAKE_TTL


def respond(
    broker: Broker,
    claims: Claims,
    *,
    offer: object,
    responder_nonce: object,
    signature: object,
    ctx: RequestContext,
) -> tuple[str, HandshakeResult]:
    """Step 2: the responder proves its key; returns ``(answer, initiator's identity)``.

    Raises:
        InvalidRequest: a field is missing or malformed.
        Unauthorized: the offer is not ours, expired or replayed; the caller is not the
            offer's responder or not the holder of its registered key; either party is
            no longer in good standing (audited as ``mutual_auth_failed``).
    """
    from tasklease.core.audit import AuditEntry

    nb = _nonce(responder_nonce, "responder_nonce")
    sig = _signature(signature)
    step = _Step(broker, claims, "respond", ctx)
    try:
        ticket = _open_ticket(broker, offer, KIND_OFFER)
    except ProofRejected as exc:
        raise step.fail(f"offer: {exc.reason}") from None
    hid, ini, rsp, na = ticket["hid"], ticket["ini"], ticket["rsp"], ticket["na"]
    if claims.sub != rsp:
        why = "reflection: the initiator answered its own offer" if claims.sub == ini else ""
        raise step.fail(why or f"{claims.sub} is not the responder {rsp} of handshake {hid}")
    responder_agent = step.standing(rsp, "responder")
    step.verify(responder_agent, transcript("responder", hid, ini, rsp, na, nb), sig, "responder")
    step.standing(ini, "initiator")
    answer = _ticket(
        broker,
        KIND_ANSWER,
        {**ticket, "nb": nb, "rsp_scope": list(claims.scope)},
    )
    step.spend(
        f"mutual-respond\n{hid}",
        ticket["exp"] + broker.config.clock_skew + 1,
        AuditEntry(
            "mutual_auth_responded",
            agent_id=claims.sub,
            task_id=claims.task_id,
            orch_id=claims.orch_id,
            request_id=ctx.request_id,
            detail=f"handshake {hid}: responder {rsp} proved its registered key to {ini}",
        ),
    )
    return answer, HandshakeResult(hid, ini, _strs(ticket.get("ini_scope")))


def complete(
    broker: Broker,
    claims: Claims,
    *,
    answer: object,
    signature: object,
    ctx: RequestContext,
) -> tuple[str, HandshakeResult]:
    """Step 3: the initiator proves its key; returns ``(receipt, responder's identity)``.

    Raises:
        InvalidRequest: a field is missing or malformed.
        Unauthorized: as :func:`respond`, for the initiator (audited).
    """
    from tasklease.core.audit import AuditEntry

    sig = _signature(signature)
    step = _Step(broker, claims, "complete", ctx)
    try:
        ticket = _open_ticket(broker, answer, KIND_ANSWER)
        nb = ticket.get("nb")
        if not isinstance(nb, str):
            raise ProofRejected("answer without responder nonce")
    except ProofRejected as exc:
        raise step.fail(f"answer: {exc.reason}") from None
    hid, ini, rsp, na = ticket["hid"], ticket["ini"], ticket["rsp"], ticket["na"]
    if claims.sub != ini:
        raise step.fail(f"{claims.sub} is not the initiator {ini} of handshake {hid}")
    initiator_agent = step.standing(ini, "initiator")
    step.verify(initiator_agent, transcript("initiator", hid, ini, rsp, na, nb), sig, "initiator")
    step.standing(rsp, "responder")
    now = int(broker.kernel.now())
    receipt = _ticket(
        broker,
        KIND_RECEIPT,
        {**ticket, "aud": rsp, "iat": now, "exp": now + HANDSHAKE_TTL},
    )
    step.spend(
        f"mutual-complete\n{hid}",
        ticket["exp"] + broker.config.clock_skew + 1,
        AuditEntry(
            "mutual_auth_completed",
            agent_id=claims.sub,
            task_id=claims.task_id,
            orch_id=claims.orch_id,
            request_id=ctx.request_id,
            detail=f"handshake {hid} completed: {ini} and {rsp} each proved their registered key",
        ),
    )
    return receipt, HandshakeResult(hid, rsp, _strs(ticket.get("rsp_scope")))
