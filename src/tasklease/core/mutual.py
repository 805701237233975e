"""Agent-to-agent mutual authentication: the signed formats and the offline proofs.

The bytes both parties of the broker-mediated handshake (``core.handshake``) sign are
:func:`transcript` (from ``rules.messages``, which the SDK signs with too); a responder
checks the handshake's receipt offline with :func:`verify_receipt`.

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
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey, VerifyKey

from tasklease.rules import jws
from tasklease.rules.claims import is_expired
from tasklease.rules.jws import jwk_thumbprint
from tasklease.rules.messages import MUTUAL_CONTEXT, transcript

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
    "decode_signed",
    "make_workload_proof",
    "string_list",
    "token_hash",
    "transcript",
    "verify_peer",
    "verify_receipt",
    "verify_workload_proof",
]

HANDSHAKE_TTL = 30
KIND_OFFER = "tasklease-mutual-offer+jwt"
KIND_ANSWER = "tasklease-mutual-answer+jwt"
KIND_RECEIPT = "tasklease-mutual-receipt+jwt"
KIND_WPT = "wpt+jwt"
WPT_MAX_TTL = 60


def token_hash(token: str) -> str:
    """base64url(SHA-256(ASCII token)), the ``wth``/``ath`` form (RFC 9449 section 4.2)."""
    return jws.b64url_encode(hashlib.sha256(token.encode("ascii")).digest())


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


def decode_signed(
    token: str, typ: str, resolve_key: Callable[[str], VerifyKey | None]
) -> dict[str, Any]:
    """The claims of a compact EdDSA JWS of ``typ``; raises ProofRejected otherwise."""
    try:
        return jws.decode(token, resolve_key=resolve_key, allowed_typs=(typ,)).claims
    except jws.JWSError as exc:
        raise ProofRejected(exc.reason) from None


def string_list(value: object) -> tuple[str, ...]:
    """A claim that must be a list of strings (a scope); raises ProofRejected otherwise."""
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
    claims = decode_signed(receipt, KIND_RECEIPT, resolve_key)
    if claims.get("iss") != issuer:
        raise ProofRejected("issuer mismatch")
    if claims.get("aud") != me or claims.get("rsp") != me:
        raise ProofRejected("receipt is for another responder")
    if not hmac.compare_digest(str(claims.get("hid", "")), handshake_id):
        raise ProofRejected("receipt is for another handshake")
    if not hmac.compare_digest(str(claims.get("nb", "")), responder_nonce):
        raise ProofRejected("receipt does not carry our nonce")
    exp = claims.get("exp")
    if type(exp) is not int or is_expired(exp, now):
        raise ProofRejected("receipt expired")
    initiator = claims.get("ini")
    if not isinstance(initiator, str):
        raise ProofRejected("receipt without initiator")
    return HandshakeResult(handshake_id, initiator, string_list(claims.get("ini_scope")))


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
    return jws.encode(body, typ=KIND_WPT, kid=kid, key=key)


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
    jwk = access_claims.get("agent_jwk")
    x = jwk.get("x") if isinstance(jwk, dict) else None
    try:
        raw = jws.b64url_decode(x) if isinstance(x, str) else b""
    except jws.JWSError:
        raw = b""
    if len(raw) != 32:
        raise ProofRejected("access token carries no agent_jwk")
    kid = jwk_thumbprint(raw)
    peer_key = VerifyKey(raw)
    claims = decode_signed(proof, KIND_WPT, lambda k: peer_key if k == kid else None)
    if claims.get("aud") != me:
        raise ProofRejected("proof addressed to another audience")
    if not hmac.compare_digest(str(claims.get("wth", "")), token_hash(access_token)):
        raise ProofRejected("proof bound to another access token")
    iat, exp, jti = claims.get("iat"), claims.get("exp"), claims.get("jti")
    if type(iat) is not int or type(exp) is not int or not isinstance(jti, str) or not jti:
        raise ProofRejected("proof lacks iat, exp or jti")
    if exp <= iat or exp - iat > WPT_MAX_TTL:
        raise ProofRejected("proof lifetime outside 1..60 seconds")
    if is_expired(exp, now) or now + skew < iat:
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
    claims = decode_signed(access_token, "at+jwt", resolve_key)
    if claims.get("iss") != issuer:
        raise ProofRejected("issuer mismatch")
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if type(exp) is not int or type(nbf) is not int or is_expired(exp, now) or now + skew < nbf:
        raise ProofRejected("access token expired or not yet valid")
    verify_workload_proof(
        proof, access_token=access_token, access_claims=claims, me=me, now=now, replay=replay
    )
    return claims
