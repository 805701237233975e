"""Offline peer mutual authentication: the messages, the signed transcript and their checks.

Two registered agents authenticate each other with no broker round trip: each proves it
holds the Ed25519 key its broker-signed access token names (``agent_jwk``, the key it
registered) by signing a transcript that holds a fresh nonce of the other's choosing.
Their tokens are verified from the broker's cached JWKS and the revocation feed
(``tasklease.verify.Verifier.verify_peer``); this module is the pure part: the bytes,
the formats, the clock and nonce rules (PyNaCl and the standard library only)::

    I -> R  hello   {initiator, responder, nonce_i, iat}                 (no token yet)
    R -> I  answer  {v, nonce_i, nonce_r, token_R, sig_R(transcript "responder"), cookie}
    I -> R  finish  {v, nonce_r, token_I, sig_I(transcript "initiator"), cookie}

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
(30) of the message it answers, and only once; a hello whose ``iat`` is more than
``window`` from the responder's clock is refused. The initiator shows its token only to a
responder it has authenticated; the responder, which shows its own to whoever sends a
hello, shows only a sender-constrained one by default (``client._peer``).

The responder keeps no state for a hello, which anyone can send (decision 149): what it
needs to check the finish (both identities, both nonces, the hello's time, its view of the
channel, the hash of the token it showed, the time it answered) goes into the answer
sealed under a key only it holds (:func:`seal_challenge`: XSalsa20-Poly1305, the
*cookie*), and comes back in the finish, as TLS 1.3 does with its stateless
HelloRetryRequest cookie and QUIC with its Retry token. Only a finish that verifies, from
a holder of a broker-signed token's key, is remembered (single use, under a quota per
holder key). The cookie is what version 2 of the answer and the finish add (``"v": 2``);
the transcript is unchanged. A version 1 answer (no cookie) is still finished, so a new
initiator completes with an old responder; a version 1 finish is refused.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.secret
import nacl.signing

from tasklease.rules import jws
from tasklease.rules.binding import access_token_hash

__all__ = [
    "CHALLENGE_KEY_BYTES",
    "COOKIE_CONTEXT",
    "HELLO",
    "MAX_MESSAGE_BYTES",
    "MESSAGE_VERSION",
    "PEER_CONTEXT",
    "WINDOW",
    "Answer",
    "Challenge",
    "Finish",
    "Hello",
    "PeerRejected",
    "challenge_transcript",
    "holder_key",
    "open_challenge",
    "parse_answer",
    "parse_finish",
    "parse_hello",
    "peer_transcript",
    "seal_challenge",
    "sign_transcript",
    "verify_transcript",
]

PEER_CONTEXT = b"tasklease-peer-v1\n"
WINDOW = 30
"""Seconds within which an answer or a finish must come, and a hello's ``iat`` must lie."""
MAX_MESSAGE_BYTES = 16384
MESSAGE_VERSION = 2
"""The version of the answer and the finish: 2 carries the responder's sealed ``cookie``."""
COOKIE_CONTEXT = b"tasklease-peer-cookie-v1\n"
CHALLENGE_KEY_BYTES = nacl.secret.SecretBox.KEY_SIZE
HELLO = "tasklease-peer-hello"
_ANSWER = "tasklease-peer-answer"
_FINISH = "tasklease-peer-finish"
_ROLES = ("initiator", "responder")
_NONCE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 random bytes, base64url
_MAX_ID = 2048
_MAX_COOKIE = MAX_MESSAGE_BYTES  # the finish that carries it is bounded by that too


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
    cookie: str = ""  # version 2: the responder's sealed challenge, echoed in the finish


@dataclass(frozen=True, slots=True)
class Finish:
    responder_nonce: str
    token: str
    signature: bytes
    cookie: str = ""  # version 2: the answer's cookie, as it came


@dataclass(frozen=True, slots=True)
class Challenge:
    """What a responder needs to check the finish of one run, which it keeps nowhere but in
    the answer's cookie (:func:`seal_challenge`): the responder and the initiator the
    hello named, both nonces, the hello's ``iat``, the channel as the responder knows it,
    the SHA-256 of the token it showed (``ath``) and when it answered (its clock)."""

    responder: str
    initiator: str
    initiator_nonce: str
    responder_nonce: str
    iat: int
    channel: str
    responder_token_hash: str
    answered_at: float


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
    return _transcript(
        role,
        initiator,
        responder,
        initiator_nonce,
        responder_nonce,
        iat,
        channel,
        access_token_hash(responder_token),
        access_token_hash(initiator_token) if initiator_token else "",
    )


def challenge_transcript(challenge: Challenge, initiator_token: str) -> bytes:
    """The initiator's transcript for the run ``challenge`` describes: the bytes of
    :func:`peer_transcript` ``("initiator", ...)``, with the responder's token by the hash
    the cookie keeps.

    Raises:
        ValueError: no initiator token.
    """
    if not initiator_token:
        raise ValueError("the initiator's transcript covers the initiator's token")
    return _transcript(
        "initiator",
        challenge.initiator,
        challenge.responder,
        challenge.initiator_nonce,
        challenge.responder_nonce,
        challenge.iat,
        challenge.channel,
        challenge.responder_token_hash,
        access_token_hash(initiator_token),
    )


def _transcript(role: str, *body: str | int) -> bytes:
    text = json.dumps([role, *body], separators=(",", ":"), ensure_ascii=False)
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


# --- the responder's cookie: its state for one run, held by the initiator --------------------


def seal_challenge(challenge: Challenge, key: bytes) -> str:
    """The cookie that carries ``challenge`` (base64url): ``COOKIE_CONTEXT`` and the fields
    as compact JSON, encrypted and authenticated (XSalsa20-Poly1305, libsodium's
    ``secretbox``, a fresh random nonce each) under ``key``, the responder's own
    :data:`CHALLENGE_KEY_BYTES`-byte secret. Sealed rather than only authenticated: it
    carries the channel as the responder knows it, a TLS exporter value perhaps, and is
    read by nobody but the responder (RFC 9000, section 8.1.4, on Retry tokens).

    Raises:
        ValueError: ``key`` is not a key of :data:`CHALLENGE_KEY_BYTES` bytes.
    """
    body = [
        challenge.responder,
        challenge.initiator,
        challenge.initiator_nonce,
        challenge.responder_nonce,
        challenge.iat,
        challenge.channel,
        challenge.responder_token_hash,
        challenge.answered_at,
    ]
    plain = COOKIE_CONTEXT + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return jws.b64url_encode(bytes(_box(key).encrypt(plain)))


def open_challenge(cookie: str, key: bytes) -> Challenge:
    """The challenge ``cookie`` carries, if ``key`` sealed it (:func:`seal_challenge`). The
    authentication tag is checked by libsodium in constant time before anything is read;
    a cookie that was altered, made up, or sealed under another key is refused.

    Raises:
        PeerRejected: not a cookie sealed under ``key``.
        ValueError: ``key`` is not a key of :data:`CHALLENGE_KEY_BYTES` bytes.
    """
    box = _box(key)
    if not isinstance(cookie, str) or not cookie or len(cookie) > _MAX_COOKIE:
        raise PeerRejected("cookie missing or malformed")
    try:
        plain = box.decrypt(jws.b64url_decode(cookie))
    except (jws.JWSError, nacl.exceptions.CryptoError):
        raise PeerRejected("the cookie is not one this responder sealed") from None
    if not plain.startswith(COOKIE_CONTEXT):
        raise PeerRejected("the cookie is not one this responder sealed")
    try:
        body = json.loads(plain[len(COOKIE_CONTEXT) :])
    except ValueError:
        body = None
    if (
        type(body) is not list
        or len(body) != 8
        or not all(type(v) is str for v in (*body[:4], *body[5:7]))
        or type(body[4]) is not int
        or type(body[7]) not in (int, float)
    ):
        raise PeerRejected("the cookie is not one this responder sealed")
    responder, initiator, initiator_nonce, responder_nonce, iat, channel, ath, answered = body
    return Challenge(
        responder, initiator, initiator_nonce, responder_nonce, iat, channel, ath, float(answered)
    )


def _box(key: bytes) -> nacl.secret.SecretBox:
    if not isinstance(key, bytes) or len(key) != CHALLENGE_KEY_BYTES:
        raise ValueError(f"a challenge key is {CHALLENGE_KEY_BYTES} random bytes")
    return nacl.secret.SecretBox(key)


# --- the messages on the wire: compact JSON objects -----------------------------------------


def encode(kind: str, fields: Mapping[str, Any]) -> str:
    return json.dumps({"typ": kind, **fields}, separators=(",", ":"), ensure_ascii=True)


def _load(text: object, kind: str) -> dict[str, Any]:
    if not isinstance(text, str) or len(text) > MAX_MESSAGE_BYTES:
        raise PeerRejected("peer message missing or too large")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # anyone may send a hello of nested arrays
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


def _cookie(data: Mapping[str, Any]) -> str:
    """The cookie of a version 2 answer or finish; "" for version 1 (no ``v``, no cookie).

    Raises:
        PeerRejected: another version, or a cookie where the version does not match it.
    """
    if "v" not in data:
        if "cookie" in data:
            raise PeerRejected("a cookie in a version 1 message")
        return ""
    version = data["v"]
    if type(version) is not int or version != MESSAGE_VERSION:
        raise PeerRejected("unsupported message version")
    return _text(data, "cookie", _MAX_COOKIE)


def parse_answer(text: object) -> Answer:
    data = _load(text, _ANSWER)
    return Answer(
        _nonce(data, "initiator_nonce"),
        _nonce(data, "nonce"),
        _text(data, "token", MAX_MESSAGE_BYTES),
        _signature(data),
        _cookie(data),
    )


def parse_finish(text: object) -> Finish:
    data = _load(text, _FINISH)
    return Finish(
        _nonce(data, "responder_nonce"),
        _text(data, "token", MAX_MESSAGE_BYTES),
        _signature(data),
        _cookie(data),
    )


def _versioned(cookie: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Version 2 (``v`` and the cookie) when there is a cookie; version 1 otherwise."""
    return {"v": MESSAGE_VERSION, **fields, "cookie": cookie} if cookie else fields


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
        _versioned(
            answer.cookie,
            {
                "initiator_nonce": answer.initiator_nonce,
                "nonce": answer.nonce,
                "token": answer.token,
                "sig": jws.b64url_encode(answer.signature),
            },
        ),
    )


def finish_message(finish: Finish) -> str:
    return encode(
        _FINISH,
        _versioned(
            finish.cookie,
            {
                "responder_nonce": finish.responder_nonce,
                "token": finish.token,
                "sig": jws.b64url_encode(finish.signature),
            },
        ),
    )
