"""The handshake's tickets reach an agent from its peer, over the agents' own channel: the
offer a responder is handed, the answer an initiator gets back. A peer that wrote one
that is no compact JWS, or one missing a field, made the SDK raise ``ValueError``,
``KeyError`` or ``TypeError`` instead of the ``Unauthorized`` the handshake raises for
an answer that is not one to its offer; nothing is signed or sent for either."""

from __future__ import annotations

import json
from typing import Any

import httpx
import nacl.signing
import pytest
from agents_support import Env

from tasklease.client import Agent, TaskleaseError, Unauthorized
from tasklease.client._sync import run_flow
from tasklease.client._trust import respond_flow
from tasklease.rules import jws as _jws


def _agent(env: Env, task: str, scope: list[str]) -> Agent:
    return Agent.register(
        env.url, env.launch(scope), "orch-1", task, scope, clock=env.clock, renew_margin=0
    )


def _ticket(claims: dict[str, Any]) -> str:
    header = _jws.b64url_encode(b'{"alg":"EdDSA","typ":"JWT","kid":"k"}')
    payload = _jws.b64url_encode(json.dumps(claims).encode())
    return f"{header}.{payload}.{_jws.b64url_encode(b'x' * 64)}"


def _claims(ticket: str) -> dict[str, Any]:
    return _jws.decode_unverified(ticket)[1]


def _crafted_answers(offer: str) -> list[str]:
    ours = _claims(offer)
    same = {name: ours[name] for name in ("hid", "ini", "rsp", "na")}
    return [
        "not a ticket",
        "a.b.c",
        _ticket(same),  # no responder nonce
        _ticket({**same, "nb": ["a list"]}),
        _ticket({**same, "nb": None}),
        _ticket({k: v for k, v in same.items() if k != "hid"}),
    ]


def test_an_initiator_refuses_a_crafted_answer_before_signing(env: Env) -> None:
    with _agent(env, "task-a", ["read:data:*"]) as a, _agent(env, "task-b", ["write:x:*"]) as b:
        for index in range(6):
            with pytest.raises(Unauthorized):
                a.handshake(b.agent_id, lambda offer, i=index: _crafted_answers(offer)[i])
        assert env.audit("mutual_auth_completed") == env.audit("mutual_auth_failed") == []


@pytest.mark.parametrize(
    "crafted",
    [
        "not a ticket",
        "a.b.c",
        "e30.e30.",  # empty objects
        "{claims}",
        "no hid",
        "a list",
    ],
)
def test_a_responder_refuses_a_crafted_offer_before_signing(env: Env, crafted: str) -> None:
    with _agent(env, "task-a", ["read:data:*"]) as a, _agent(env, "task-b", ["write:x:*"]) as b:
        if crafted in ("{claims}", "no hid", "a list"):
            offer = env.http.post(
                "/v1/mutual/initiate",
                headers={"Authorization": f"Bearer {a.token}"},
                json={"responder_id": b.agent_id, "initiator_nonce": env.nonce_hex()},
            ).json()["offer"]
            claims = _claims(offer)
            if crafted == "no hid":
                del claims["hid"]
            elif crafted == "a list":
                claims["na"] = ["x"]
            else:
                claims = {"hid": claims["hid"]}
            crafted = _ticket(claims)
        with pytest.raises(Unauthorized):
            b.respond_to_handshake(crafted)
        assert env.audit("mutual_auth_responded") == env.audit("mutual_auth_failed") == []


@pytest.mark.parametrize("peer", [None, "x", {}, {"agent_id": 7}, {"agent_id": ""}])
def test_a_broker_answer_naming_no_peer_is_a_bad_response(peer: object) -> None:
    # The broker's answers (read off the wire, never verified here) name the peer; one
    # that names none is a TaskleaseError, not a TypeError.
    offer = _ticket({"hid": "h", "ini": "a", "rsp": "b", "na": "0" * 32})
    answer = {"answer": "x", "handshake_id": "h", "initiator": peer}
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=answer))
    key = nacl.signing.SigningKey.generate()
    with httpx.Client(transport=transport) as http, pytest.raises(TaskleaseError) as refused:
        run_flow(http, respond_flow("https://broker.example", "t", key, offer))
    assert refused.value.code == "bad_response"
