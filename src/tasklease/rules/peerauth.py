"""Offline peer mutual authentication: the messages, the signed transcript and their checks.

Two registered agents authenticate each other with no broker round trip: each proves it
holds the Ed25519 key its broker-signed access token names (``agent_jwk``, the key it
registered) by signing a transcript that holds a fresh nonce of the other's choosing.
Their tokens are verified from the broker's cached JWKS and the revocation feed
(``tasklease.verify.Verifier.verify_peer``); this module is the pure part: the bytes,
the formats, the clock and nonce rules (PyNaCl and the standard library only)::

    I -> R  hello   {initiator, responder, nonce_i, iat}                 (no token yet)
    R -> I  answer  {nonce_i, nonce_r, token_R, sig_R(transcript "responder")}
    I -> R  finish  {nonce_r, token_I, sig_I(transcript "initiator")}

A transcript is ``"tasklease-peer-v1\\n" || JSON [role, initiator, responder, nonce_i,
nonce_r, iat, channel, ath_R, ath_I]`` (compact, UTF-8; ``ath_I`` is empty in the
responder's): both identities, both nonces, the channel (what both ends know of the
connection they talk over: the responder's endpoint URI as the initiator addressed it,
or a TLS exporter value where the transport gives one), and the SHA-256 of the exact
tokens presented (RFC 9449 ``ath``). The role makes a signature useless in the other role;
the context line makes it useless anywhere else (the online handshake signs
``tasklease-mutual-v1``, a registration the bare nonce).

Freshness: each side signs over the other's fresh nonce, so no signature made for one run
verifies in another; an answer or a finish is accepted only within ``window`` seconds
(30) of the message it answers, and only once (the pending nonce is spent); a hello whose
``iat`` is more than ``window`` from the responder's clock is refused, as is a hello
nonce seen before (a replay ledger), so a recorded hello costs the responder nothing.
The initiator shows its token only to a responder it has authenticated.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from tasklease.rules import jws
from tasklease.rules.binding import access_token_hash

__all__ = [
    "HELLO",
    "MAX_MESSAGE_BYTES",
    "PEER_CONTEXT",
    "WINDOW",
    "Answer",
    "Finish",
    "Hello",
    "PeerRejected",
    "holder_key",
    "parse_answer",
    "parse_finish",
    "parse_hello",
    "peer_transcript",
    "sign_transcript",
    "verify_transcript",
]

PEER_CONTEXT = b"tasklease-peer-v1\n"
WINDOW = 30
"""Seconds within which an answer or a finish must come, and a hello's ``iat`` must lie."""
MAX_MESSAGE_BYTES = 16384
HELLO = "tasklease-peer-hello"
_ANSWER = "tasklease-peer-answer"
_FINISH = "tasklease-peer-finish"
_ROLES = ("initiator", "responder")
_NONCE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 random bytes, base64url
_MAX_ID = 2048


class PeerRejected(Exception):
    """A peer message failed a check; ``reason`` is for logs, never for the peer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Hello:
    initiator: str
    responder: str
    nonce: str
    iat: int


@dataclass(frozen=True, slots=True)
class Answer:
    initiator_nonce: str
    nonce: str
    token: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class Finish:
    responder_nonce: str
    token: str
    signature: bytes


def peer_transcript(
    role: str,
    *,
    initiator: str,
    responder: str,
    initiator_nonce: str,
    responder_nonce: str,
    iat: int,
    channel: str,
    responder_token: str,
    initiator_token: str = "",
) -> bytes:
    """The exact bytes a party signs (see the module's documentation).

    Raises:
        ValueError: ``role`` is neither role, or the initiator's transcript lacks its token.
    """
    if role not in _ROLES:
        raise ValueError("role must be 'initiator' or 'responder'")
    if (role == "initiator") != bool(initiator_token):
        raise ValueError("the initiator's transcript, and only it, covers the initiator's token")
    body = [
        role,
        initiator,
        responder,
        initiator_nonce,
        responder_nonce,
        iat,
        channel,
        access_token_hash(responder_token),
        access_token_hash(initiator_token) if initiator_token else "",
    ]
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return PEER_CONTEXT + text.encode("utf-8")


def sign_transcript(transcript: bytes, key: nacl.signing.SigningKey) -> bytes:
    return jws.sign_detached(transcript, key)


def verify_transcript(transcript: bytes, signature: bytes, public_key: bytes) -> None:
    """Raise :class:`PeerRejected` unless ``signature`` is ``public_key``'s over it."""
    try:
        ok = jws.verify_detached(transcript, signature, nacl.signing.VerifyKey(public_key))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        ok = False
    if not ok:
        raise PeerRejected("the transcript signature does not verify with the peer's key")


def holder_key(claims: Mapping[str, Any]) -> bytes:
    """The raw Ed25519 key of a verified token's ``agent_jwk`` (the registered key).

    Raises:
        PeerRejected: the token names no usable key (it cannot prove its holder).
    """
    jwk = claims.get("agent_jwk")
    if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise PeerRejected("the peer's token names no registered Ed25519 key")
    x = jwk.get("x")
    try:
        raw = jws.b64url_decode(x) if isinstance(x, str) else b""
    except jws.JWSError:
        raw = b""
    if len(raw) != 32:
        raise PeerRejected("the peer's token names no registered Ed25519 key")
    return raw


def same(first: str, second: str) -> bool:
    """Constant-time equality of two identifiers or nonces."""
    return hmac.compare_digest(first.encode("utf-8"), second.encode("utf-8"))


# --- the messages on the wire: compact JSON objects -----------------------------------------


def encode(kind: str, fields: Mapping[str, Any]) -> str:
    return json.dumps({"typ": kind, **fields}, separators=(",", ":"), ensure_ascii=True)


def _load(text: object, kind: str) -> dict[str, Any]:
    if not isinstance(text, str) or len(text) > MAX_MESSAGE_BYTES:
        raise PeerRejected("peer message missing or too large")
    try:
        data = json.loads(text)
    except ValueError:
        raise PeerRejected("peer message is not JSON") from None
    if type(data) is not dict or data.get("typ") != kind:
        raise PeerRejected(f"not a {kind} message")
    return data


def _nonce(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or _NONCE.fullmatch(value) is None:
        raise PeerRejected(f"{name} is not 32 random bytes in base64url")
    return value


def _text(data: Mapping[str, Any], name: str, limit: int = _MAX_ID) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise PeerRejected(f"{name} missing or malformed")
    return value


def _signature(data: Mapping[str, Any]) -> bytes:
    try:
        raw = jws.b64url_decode(_text(data, "sig", 128))
    except jws.JWSError:
        raw = b""
    if len(raw) != 64:
        raise PeerRejected("sig is not an Ed25519 signature")
    return raw


def parse_hello(text: object) -> Hello:
    data = _load(text, HELLO)
    iat = data.get("iat")
    if type(iat) is not int:
        raise PeerRejected("iat missing or malformed")
    return Hello(_text(data, "initiator"), _text(data, "responder"), _nonce(data, "nonce"), iat)


def parse_answer(text: object) -> Answer:
    data = _load(text, _ANSWER)
    return Answer(
        _nonce(data, "initiator_nonce"),
        _nonce(data, "nonce"),
        _text(data, "token", MAX_MESSAGE_BYTES),
        _signature(data),
    )


def parse_finish(text: object) -> Finish:
    data = _load(text, _FINISH)
    return Finish(
        _nonce(data, "responder_nonce"), _text(data, "token", MAX_MESSAGE_BYTES), _signature(data)
    )


def hello_message(hello: Hello) -> str:
    return encode(
        HELLO,
        {
            "initiator": hello.initiator,
            "responder": hello.responder,
            "nonce": hello.nonce,
            "iat": hello.iat,
        },
    )


def answer_message(answer: Answer) -> str:
    return encode(
        _ANSWER,
        {
            "initiator_nonce": answer.initiator_nonce,
            "nonce": answer.nonce,
            "token": answer.token,
            "sig": jws.b64url_encode(answer.signature),
        },
    )


def finish_message(finish: Finish) -> str:
    return encode(
        _FINISH,
        {
            "responder_nonce": finish.responder_nonce,
            "token": finish.token,
            "sig": jws.b64url_encode(finish.signature),
        },
    )
