"""Agents that trust each other, SDK side: handshake, heartbeats and resumption flows.

Written once as I/O-free generators (like ``_flows``); the sync and async agents pump
them. The signed byte formats are the broker's own, from ``tasklease.rules.messages``.
"""

from __future__ import annotations

import base64
import hmac
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nacl.signing

from tasklease import bounds
from tasklease.bounds import MAX_EXPIRES_IN
from tasklease.client._errors import TaskleaseError, Unauthorized
from tasklease.client._flows import (
    Flow,
    Registration,
    answer_field,
    answer_lifetime,
    challenge_nonce,
    endpoint_url,
    expect_json,
    json_request,
)
from tasklease.rules import jws
from tasklease.rules.attenuation import MAX_SECONDS
from tasklease.rules.messages import heartbeat_signing_input as heartbeat_message
from tasklease.rules.messages import heartbeat_token_id, transcript

__all__ = [
    "Handshake",
    "HeartbeatStatus",
    "Peer",
    "complete_flow",
    "heartbeat_flow",
    "heartbeat_message",
    "heartbeat_wait",
    "initiate_flow",
    "respond_flow",
    "resume_flow",
    "transcript",
]

Exchange = Callable[[str], str]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


_OFFER_FIELDS = ("hid", "ini", "rsp", "na")
_ANSWER_FIELDS = (*_OFFER_FIELDS, "nb")


def _ticket_fields(ticket: str, names: tuple[str, ...], what: str) -> dict[str, str]:
    """The fields ``names`` of a broker ticket, read without verification: only to build
    the transcript we sign; the broker verifies the ticket itself.

    A ticket reaches us from the peer (the offer a responder is handed, the answer an
    initiator gets back), so it may be anything.

    Raises:
        Unauthorized: ``ticket`` is not a compact JWS whose payload is a JSON object
            holding each of ``names`` as a string (nothing is signed or sent).
    """
    try:
        _, claims = jws.decode_unverified(ticket)
    except jws.JWSError as exc:
        raise Unauthorized(f"the {what} is not a broker ticket: {exc.reason}") from None
    fields: dict[str, str] = {}
    for name in names:
        value = claims.get(name)
        if not isinstance(value, str):
            raise Unauthorized(f"the {what} is not a broker ticket: no {name!r}")
        fields[name] = value
    return fields


@dataclass(frozen=True, slots=True)
class Peer:
    """The other agent of a handshake, as the broker verified it."""

    agent_id: str
    scope: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Handshake:
    """A completed handshake, from the initiator's side.

    ``receipt`` is for the responder (forward it: it verifies it offline with
    ``tasklease.core.mutual.verify_receipt`` and the broker's JWKS).
    """

    handshake_id: str
    peer: Peer
    receipt: str


@dataclass(frozen=True, slots=True)
class HeartbeatStatus:
    """The broker's answer to a heartbeat: ``status`` (``alive``, or ``released`` after
    ``done``), the ``interval`` it expects the next within, and the ``deadline`` (seconds
    since the epoch) past which the agent is swept as silent."""

    status: str
    interval: float
    deadline: float


def _peer(data: Any) -> Peer:
    """The peer the broker's answer names (``bad_response`` when it names none)."""
    agent_id = data.get("agent_id") if isinstance(data, dict) else None
    if not isinstance(agent_id, str) or not agent_id:
        raise TaskleaseError("the broker's answer names no peer", code="bad_response")
    scope = data.get("scope")
    held = tuple(s for s in scope if isinstance(s, str)) if isinstance(scope, list) else ()
    return Peer(agent_id, held)


def initiate_flow(base_url: str, token: str, responder_id: str) -> Flow[tuple[str, str]]:
    """Step 1: ``(offer, initiator_nonce)``."""
    nonce = secrets.token_hex(16)
    body = {"responder_id": responder_id, "initiator_nonce": nonce}
    answer = expect_json(
        (yield json_request("POST", endpoint_url(base_url, "/v1/mutual/initiate"), body, token))
    )
    return answer_field(answer, "offer", str), nonce


def respond_flow(
    base_url: str, token: str, key: nacl.signing.SigningKey, offer: str
) -> Flow[tuple[str, Peer, str, str]]:
    """Step 2 (responder): ``(answer, initiator, handshake_id, responder_nonce)``.

    Raises:
        Unauthorized: ``offer`` (the initiator's) is not a broker ticket (nothing is
            signed or sent), or the broker refused it.
    """
    ticket = _ticket_fields(offer, _OFFER_FIELDS, "offer")
    nonce = secrets.token_hex(16)
    message = transcript(
        "responder", ticket["hid"], ticket["ini"], ticket["rsp"], ticket["na"], nonce
    )
    body = {
        "offer": offer,
        "responder_nonce": nonce,
        "signature": _b64(key.sign(message).signature),
    }
    answer = expect_json(
        (yield json_request("POST", endpoint_url(base_url, "/v1/mutual/respond"), body, token))
    )
    return (
        answer_field(answer, "answer", str),
        _peer(answer.get("initiator")),
        answer_field(answer, "handshake_id", str),
        nonce,
    )


def complete_flow(
    base_url: str,
    token: str,
    key: nacl.signing.SigningKey,
    answer_ticket: str,
    *,
    offer: str,
    initiator_nonce: str,
) -> Flow[Handshake]:
    """Step 3 (initiator): the responder's verified identity and the receipt.

    ``offer`` and ``initiator_nonce`` are step 1's: the answer is signed only if it
    answers that offer (its handshake, both parties and our nonce). Our signature
    completes whatever handshake the answer names, and the answer comes from the peer: a
    peer holding a copy of our token could otherwise have us complete a handshake it
    opened in our name with a third agent.

    Raises:
        Unauthorized: the answer is not a broker ticket, or not one to ``offer`` (nothing
            is signed or sent).
    """
    ticket = _ticket_fields(answer_ticket, _ANSWER_FIELDS, "answer")
    ours = _ticket_fields(offer, _OFFER_FIELDS, "offer")
    if any(ticket[name] != ours[name] for name in _OFFER_FIELDS) or not hmac.compare_digest(
        ticket["na"].encode(), initiator_nonce.encode()
    ):
        raise Unauthorized("the answer is not one to this agent's offer")
    message = transcript(
        "initiator", ticket["hid"], ticket["ini"], ticket["rsp"], ticket["na"], ticket["nb"]
    )
    body = {"answer": answer_ticket, "signature": _b64(key.sign(message).signature)}
    answer = expect_json(
        (yield json_request("POST", endpoint_url(base_url, "/v1/mutual/complete"), body, token))
    )
    return Handshake(
        answer_field(answer, "handshake_id", str),
        _peer(answer.get("responder")),
        answer_field(answer, "receipt", str),
    )


HEARTBEAT_SPREAD = 0.2
"""Background heartbeats wait between ``1 - HEARTBEAT_SPREAD`` and 1 times their interval,
at random: agents started together drift apart instead of beating together for good, and
none beats later than its interval (the broker's ``heartbeat_misses`` counts intervals)."""
# Jitter from a generator of our own, not the application's global one.
_jitter = random.Random()  # noqa: S311 - jitter, not a secret


def heartbeat_wait(interval: float) -> float:
    """Seconds to wait before the next background heartbeat (see :data:`HEARTBEAT_SPREAD`)."""
    return interval * (1.0 - HEARTBEAT_SPREAD * _jitter.random())


def heartbeat_flow(
    base_url: str,
    token: str,
    agent_id: str,
    key: nacl.signing.SigningKey,
    now: float,
    *,
    done: bool = False,
) -> Flow[HeartbeatStatus]:
    """One signed heartbeat (``done``: the agent is finished)."""
    token_id = heartbeat_token_id(token)  # a JWS's jti, or an opaque token's hash
    timestamp = int(now)
    jti = secrets.token_urlsafe(16)
    signature = key.sign(heartbeat_message(agent_id, token_id, timestamp, jti, done)).signature
    body = {"timestamp": timestamp, "jti": jti, "signature": _b64(signature), "done": done}
    answer = expect_json(
        (yield json_request("POST", endpoint_url(base_url, "/v1/heartbeat"), body, token))
    )
    interval = answer.get("interval")
    deadline = answer.get("deadline")
    return HeartbeatStatus(
        answer_field(answer, "status", str),
        float(bounds.number_within(interval, 1, MAX_EXPIRES_IN) or 30.0),
        float(bounds.number_within(deadline, 0, MAX_SECONDS) or 0.0),
    )


def resume_flow(base_url: str, agent_id: str, key: nacl.signing.SigningKey) -> Flow[Registration]:
    """Prove the registered key with a fresh nonce; a new token for the same identity."""
    challenge = expect_json((yield json_request("GET", endpoint_url(base_url, "/v1/challenge"))))
    nonce, message = challenge_nonce(challenge)
    signature = key.sign(message).signature
    body = {"agent_id": agent_id, "nonce": nonce, "signature": _b64(signature)}
    answer = expect_json((yield json_request("POST", endpoint_url(base_url, "/v1/resume"), body)))
    return Registration(
        agent_id=answer_field(answer, "agent_id", str),
        token=answer_field(answer, "access_token", str),
        expires_in=answer_lifetime(answer),
    )
