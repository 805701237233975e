"""Agent-to-agent mutual authentication: the signed formats and the offline proofs.

The bytes both parties of the broker-mediated handshake (``core.handshake``) sign are
:func:`transcript` (from ``rules.messages``, which the SDK signs with too); a responder
checks the handshake's receipt offline with :func:`verify_receipt`.

**Offline flow** (WIMSE, draft-ietf-wimse-workload-creds-02 and draft-ietf-wimse-wpt-02):
an agent gets a Workload Identity Token from the broker (``POST /v1/workload/identity``:
its SPIFFE ID and registered key, ``typ: wit+jwt``) and sends, with each request to a
peer, its access token, the WIT (``Workload-Identity-Token``) and a fresh Workload Proof
Token signed with its registered key (``Workload-Proof-Token``: ``aud`` the request's
target URI, ``wth`` the WIT's hash, ``ath`` the access token's; ``rules.wimse``). The peer
checks all three with :func:`verify_peer`: the token and the WIT against the broker's
JWKS, the proof against the WIT's key, the ``jti`` against its replay ledger. These
functions are pure (time is passed in) and need only PyNaCl: the SDK and resource servers
use them without a broker.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nacl.signing import VerifyKey

from tasklease.rules import jws
from tasklease.rules.binding import ProofLedger
from tasklease.rules.claims import ClaimRejected, holder_of, is_expired
from tasklease.rules.messages import MUTUAL_CONTEXT, transcript
from tasklease.rules.wimse import WorkloadProofError, verify_wit, verify_wpt

__all__ = [
    "HANDSHAKE_TTL",
    "KIND_ANSWER",
    "KIND_OFFER",
    "KIND_RECEIPT",
    "MUTUAL_CONTEXT",
    "HandshakeResult",
    "ProofRejected",
    "decode_signed",
    "string_list",
    "transcript",
    "verify_peer",
    "verify_receipt",
]

HANDSHAKE_TTL = 30
KIND_OFFER = "tasklease-mutual-offer+jwt"
KIND_ANSWER = "tasklease-mutual-answer+jwt"
KIND_RECEIPT = "tasklease-mutual-receipt+jwt"


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


def verify_peer(
    access_token: str,
    wit: str,
    wpt: str,
    *,
    resolve_key: Callable[[str], VerifyKey | None],
    issuer: str,
    target_uri: str,
    now: float,
    replay: ProofLedger,
    skew: int = 30,
) -> dict[str, Any]:
    """Offline check of a peer's request: its access token, its WIT and its WPT.

    The access token's signature (``typ: at+jwt``, key by ``kid`` from the broker's
    JWKS), issuer and lifetime; the WIT (:func:`tasklease.rules.wimse.verify_wit`) for
    the token's holder and the key its token names (``agent_jwk``); then the WPT for this
    request (:func:`tasklease.rules.wimse.verify_wpt`: ``aud`` = ``target_uri``, ``wth``,
    ``ath`` = this access token, ``jti`` unseen in ``replay``). Revocation is *not*
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
    try:
        holder = holder_of(claims)
        identity = verify_wit(wit, resolve_key=resolve_key, issuer=issuer, now=now)
        if identity.sub != holder:
            raise ProofRejected("the WIT names another workload than the access token")
        jwk = claims.get("agent_jwk")
        if isinstance(jwk, dict) and jwk.get("x") != jws.b64url_encode(identity.public_key):
            raise ProofRejected("the WIT names another key than the access token")
        verify_wpt(
            wpt,
            identity=identity,
            wit=wit,
            target_uri=target_uri,
            now=now,
            replay=replay,
            access_token=access_token,
        )
    except (WorkloadProofError, ClaimRejected) as exc:
        raise ProofRejected(exc.reason) from None
    return claims
