"""The messages agents and operators sign for the broker with their keys (known-answer tested).

Each starts with its own context line, so no signature made for one purpose is ever
accepted for another (a heartbeat as a handshake, a handshake as a registration), and
the rest is a compact JSON array, which cannot be re-split into other fields. The SDK
builds these bytes and the broker checks them: both call this module.

The one message without a context line is the agent's proof of its key at registration
and resume (the AgentWrit wire contract): the bare bytes of the broker's challenge nonce.
It is exactly :data:`CHALLENGE_NONCE_BYTES` bytes, shorter than every other message here,
and the SDK signs nothing else for it (:func:`challenge_nonce_bytes`): whoever answers
``GET /v1/challenge`` cannot have the agent's key sign bytes of its choosing.
"""

from __future__ import annotations

import hashlib
import json
import re

from tasklease.rules import jws
from tasklease.rules.secretshapes import REFERENCE

__all__ = [
    "CHALLENGE_NONCE_BYTES",
    "HEARTBEAT_CONTEXT",
    "MUTUAL_CONTEXT",
    "OPERATOR_CONTEXT",
    "challenge_nonce_bytes",
    "heartbeat_signing_input",
    "heartbeat_token_id",
    "operator_sign_in_input",
    "reference_hash",
    "transcript",
]

MUTUAL_CONTEXT = b"tasklease-mutual-v1\n"
HEARTBEAT_CONTEXT = b"tasklease-heartbeat-v1\n"
OPERATOR_CONTEXT = b"tasklease-operator-v1\n"
_ROLES = ("initiator", "responder")
CHALLENGE_NONCE_BYTES = 32
_CHALLENGE_NONCE = re.compile(r"[0-9a-f]{64}")


def challenge_nonce_bytes(nonce: object) -> bytes:
    """The bytes of a ``GET /v1/challenge`` nonce, which an agent's key signs for
    ``POST /v1/register`` and ``POST /v1/resume``: a nonce is exactly 64 lowercase hex
    characters (:data:`CHALLENGE_NONCE_BYTES` bytes), as the broker issues it.

    Raises:
        ValueError: ``nonce`` is anything else (another length, case or character).
    """
    if type(nonce) is not str or _CHALLENGE_NONCE.fullmatch(nonce) is None:
        raise ValueError("a challenge nonce is 64 lowercase hex characters (32 bytes)")
    return bytes.fromhex(nonce)


def transcript(
    role: str,
    handshake_id: str,
    initiator: str,
    responder: str,
    initiator_nonce: str,
    responder_nonce: str,
) -> bytes:
    """The exact bytes a party signs in the mutual-authentication handshake.

    ``"tasklease-mutual-v1\\n" || JSON [role, handshake_id, initiator, responder,
    initiator_nonce, responder_nonce]`` (compact, UTF-8). ``role`` (``initiator`` or
    ``responder``) makes a signature useless in the other role; the rest binds both
    identities, both nonces and this handshake.

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


def heartbeat_signing_input(
    agent_id: str, token_jti: str, timestamp: int, proof_jti: str, done: bool
) -> bytes:
    """The exact bytes an agent signs for ``POST /v1/heartbeat``.

    ``"tasklease-heartbeat-v1\\n" || JSON [agent_id, token_jti, timestamp, proof_jti,
    done]`` (compact, UTF-8): ``token_jti`` names the presented token
    (:func:`heartbeat_token_id`): a signed (JWS) token's ``jti``, or, for a by-reference
    (``tlr_``) token, whose ``jti`` its holder cannot read, the token's SHA-256 in
    lowercase hex (:func:`reference_hash`, what the broker stores it by). ``proof_jti`` is
    a fresh single-use value. A JWS token's message is as it always was; the two forms
    never meet (a ``jti`` the broker mints is 32 hex characters, a hash 64).
    """
    body = json.dumps([agent_id, token_jti, timestamp, proof_jti, done], separators=(",", ":"))
    return HEARTBEAT_CONTEXT + body.encode("utf-8")


def reference_hash(token: str) -> str:
    """The SHA-256 (lowercase hex) of a by-reference token: the key the broker stores it
    by, and what a heartbeat names it by (:func:`heartbeat_signing_input`)."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def heartbeat_token_id(token: str) -> str:
    """The ``token_jti`` of :func:`heartbeat_signing_input` for the presented ``token``, as
    its holder computes it: :func:`reference_hash` of a by-reference token; the ``jti`` of
    a JWS, read without verification (the broker verifies the token); ``""`` for anything
    else (the broker refuses such a heartbeat). The broker compares it with the ``jti`` of
    the token it verified, or the hash it looked a by-reference token up by."""
    if REFERENCE.fullmatch(token) is not None:
        return reference_hash(token)
    try:
        _, claims = jws.decode_unverified(token)
    except jws.JWSError:
        return ""
    jti = claims.get("jti")
    return jti if isinstance(jti, str) else ""


def operator_sign_in_input(name: str, nonce: str) -> bytes:
    """The exact bytes an operator's key signs for ``POST /v1/operator/auth``.

    ``"tasklease-operator-v1\\n" || JSON [name, nonce]`` (compact, UTF-8): ``nonce`` is
    the 64 hex characters from ``GET /v1/challenge``, as received. An agent's proof signs
    the bare nonce bytes, so neither signature is ever accepted as the other.
    """
    body = json.dumps([name, nonce], separators=(",", ":"), ensure_ascii=False)
    return OPERATOR_CONTEXT + body.encode("utf-8")
