"""A handshake's steps on different replicas: what the offer and the answer carry of each
party's token is sealed under a key the replicas share (derived from the nonce secret),
so a step on one replica opens what another sealed, and checks that token still stands
(docs/decisions.md 271)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from e2e_support import Agent, RunningBroker

from tasklease.core.mutual import transcript
from tasklease.rules import jws

pytestmark = pytest.mark.slow

Replicas = Callable[..., list[RunningBroker]]


def _signature(agent: Agent, role: str, ticket: str, nb: str) -> str:
    t: dict[str, Any] = jws.decode_unverified(ticket)[1]
    message = transcript(role, t["hid"], t["ini"], t["rsp"], t["na"], nb)
    return base64.b64encode(agent.key.sign(message)).decode()


def test_a_handshake_completes_across_replicas_and_stops_when_a_token_ends(
    pg_url: str, replicas: Replicas
) -> None:
    one, two = replicas(pg_url)
    a = one.register(["read:data:*"])
    b = two.register(["write:reports:*"])

    def offer() -> str:
        answer = one.post(
            "/v1/mutual/initiate",
            headers=a.bearer,
            json={"responder_id": b.agent_id, "initiator_nonce": secrets.token_hex(16)},
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["offer"])

    def respond(ticket: str) -> Any:
        nb = secrets.token_hex(16)
        return two.post(
            "/v1/mutual/respond",
            headers=b.bearer,
            json={
                "offer": ticket,
                "responder_nonce": nb,
                "signature": _signature(b, "responder", ticket, nb),
            },
        )

    answered = respond(offer())  # sealed on one replica, opened on the other
    assert answered.status_code == 200, answered.text
    answer = answered.json()["answer"]
    completed = one.post(
        "/v1/mutual/complete",
        headers=a.bearer,
        json={
            "answer": answer,
            "signature": _signature(a, "initiator", answer, jws.decode_unverified(answer)[1]["nb"]),
        },
    )
    assert completed.status_code == 200, completed.text

    # The initiator's token revoked on the other replica: its next offer is answered no more.
    pending = offer()
    jti = jws.decode_unverified(a.access_token)[1]["jti"]
    revoked = two.post(
        "/v1/revoke", json={"level": "token", "target": jti}, headers=two.admin_headers()
    )
    assert revoked.status_code == 200, revoked.text
    refused = respond(pending)
    assert refused.status_code == 401, refused.text
